"""torchrun --nproc_per_node 2 zero3_imp.py PROBE OUT

IMPManager's plain loop under DeepSpeed ZeRO-3 (CPU, gloo): after every ``manager.apply_masks()``
no pruned weight is alive on this rank, neither in the partition DeepSpeed computes with nor in the
optimizer's fp32 master copy (which DeepSpeed copies over the partition at the next step).
"""

import os
import sys

import deepspeed
import torch
from common import dump, finish, masks_of, tiny_model
from deepspeed.utils import safe_get_local_fp32_param
from transformers import BertForMaskedLM

from hf_tickets.core.shards import full_weight, is_zero3, local_mask, local_view
from hf_tickets.training.imp import IMPConfig, IMPManager

probe, out = sys.argv[1], sys.argv[2]
deepspeed.init_distributed(dist_backend="gloo")
torch.manual_seed(0)
model = tiny_model(BertForMaskedLM, intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# 32x32 weights stay gathered between steps (persistent), the 37x32 ones are partitioned again.
zero = {"stage": 3, "stage3_param_persistence_threshold": 1100}
config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": zero, "steps_per_print": 10**9}
engine, *_ = deepspeed.initialize(
    model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.1), config=config
)
assert all(is_zero3(p) for p in engine.module.parameters())

generator = torch.Generator().manual_seed(1)
batch = {"input_ids": torch.randint(0, 99, (4, 9), generator=generator)}
batch["labels"] = batch["input_ids"].clone()

manager = IMPManager(engine, IMPConfig(imp_rounds=2, prune_fraction=0.5, imp_seed=0), out)
facts = {"alive_partition": [], "alive_master": [], "alive_full": [], "rounds": []}
trained = {}
for rnd in manager.rounds():
    params = rnd.ticket.parameters_of(engine)
    for _ in range(3):
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        manager.apply_masks()
        with torch.no_grad():
            partition = master = full = 0
            for name, p in params.items():
                pruned = ~local_mask(rnd.ticket.masks[name], p)
                partition += int(torch.count_nonzero(local_view(p)[pruned]))
                master += int(torch.count_nonzero(safe_get_local_fp32_param(p)[pruned.to(torch.bool)]))
                full += int(torch.count_nonzero(full_weight(p)[~rnd.ticket.masks[name]]))
        facts["alive_partition"].append(partition)
        facts["alive_master"].append(master)
        facts["alive_full"].append(full)
    facts["rounds"].append([rnd.index, rnd.sparsity])
    trained.update(masks_of(rnd.ticket, f"round{rnd.index}."))
    rnd.finish({"eval_loss": float(loss)})
facts["matching"] = manager.matching_round()["round"]
dump(probe, facts, trained)
finish()
# Everything is recorded and the group left; skip interpreter teardown, where a native thread of
# DeepSpeed's/gloo's sometimes aborts ("terminate called without an active exception", 1 run in 3).
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
