"""torchrun --nproc_per_node 2 zero3_ticket.py PROBE OUT

DeepSpeed ZeRO-3 on CPU (deepspeed.initialize, gloo): every rank holds a flat slice of each weight
and ``p.data`` is empty. The ticket scored on the gathered weights equals the unsharded one, the
masks zero the right entries of each slice and of the optimizer's fp32 master copy (so training
steps keep them zero), and the saved ticket is the ordinary file.
"""

import copy
import sys

import deepspeed
import torch
import torch.distributed as dist
from common import dump, finish, masks_of, tiny_model
from deepspeed.utils import safe_get_local_fp32_param
from transformers import BertForMaskedLM

import hf_tickets
from hf_tickets.core.collectives import is_main_process
from hf_tickets.core.shards import (
    full_shape,
    full_state_dict,
    full_weight,
    is_zero3,
    load_full_state_dict,
    local_mask,
    local_view,
    zero_pruned_,
)

probe, out = sys.argv[1], sys.argv[2]
deepspeed.init_distributed(dist_backend="gloo")
facts = {}

torch.manual_seed(0)
model = tiny_model(BertForMaskedLM, intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
reference = copy.deepcopy(model)
theta0 = {n: t.clone() for n, t in model.state_dict().items()}
# Parameters under the persistence threshold stay gathered between steps: here the 32x32 ones
# (1024 weights) do, the 37x32 intermediate ones (1184) are partitioned again after each use.
zero = {"stage": 3, "stage3_param_persistence_threshold": 1100}
config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": zero, "steps_per_print": 10**9}
# A torch optimizer: DeepSpeed's own CPU Adam would first compile a C++ extension (minutes).
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2), config=config)
net = engine.module
facts["all_partitioned"] = all(is_zero3(p) and p.numel() == 0 for p in net.parameters())

ref_ticket = hf_tickets.prune(reference, 0.6)
ticket = hf_tickets.prune(net, 0.6)
facts["round1_equal"] = ticket.equals(ref_ticket)
facts["fingerprint_equal"] = all(torch.equal(v, ref_ticket.fingerprint[k]) for k, v in ticket.fingerprint.items())
assert facts["round1_equal"] and facts["fingerprint_equal"]

ticket.apply(net)
ref_ticket.apply(reference)
params = ticket.parameters_of(net)
for name, p in params.items():
    assert tuple(full_shape(p)) == tuple(ticket.masks[name].shape)
    keep = local_mask(ticket.masks[name], p)
    assert keep.shape == local_view(p).shape
    assert int(torch.count_nonzero(local_view(p)[~keep])) == 0, name
    assert torch.equal(full_weight(p), ticket.parameters_of(reference)[name].detach()), name
    # The optimizer's fp32 master slice, which DeepSpeed copies over the partition after each step.
    assert int(torch.count_nonzero(safe_get_local_fp32_param(p)[~keep])) == 0, name
facts["master_masked"] = True

# Training steps: the fp32 master copy was masked too, so after re-zeroing each step no pruned
# weight is alive on any rank; without the master masked they would come back.
generator = torch.Generator().manual_seed(1)
batch = {"input_ids": torch.randint(0, 99, (4, 9), generator=generator)}
batch["labels"] = batch["input_ids"].clone()
alive_after_steps = []
for step in range(3):
    loss = engine(**batch).loss
    engine.backward(loss)
    engine.step()
    with torch.no_grad():
        for name, p in params.items():
            zero_pruned_(p, ticket.masks[name])
    facts["gathered_after_step"] = sorted({p.data.numel() > 0 for p in params.values()})
    alive_after_steps.append(
        sum(int(torch.count_nonzero(full_weight(p)[~ticket.masks[name]])) for name, p in params.items())
    )
facts["alive_after_steps"] = alive_after_steps
changed = sum(int((full_weight(p) != ticket.parameters_of(reference)[n].detach()).sum()) for n, p in params.items())
facts["kept_weights_trained"] = changed > 0

ticket2 = hf_tickets.prune(net, 0.8, ticket=ticket)

# Rewind (IMP): θ0 into every copy DeepSpeed keeps (partition, gathered persistent weight, fp32 master).
trained = {n: t.clone() for n, t in full_state_dict(net).items()}
load_full_state_dict(net, theta0)
facts["rewound"] = all(torch.equal(full_weight(p), theta0[n]) for n, p in net.named_parameters())
facts["rewound_master"] = all(
    torch.equal(safe_get_local_fp32_param(p), local_view(p)) for p in net.parameters() if p.requires_grad
)
load_full_state_dict(net, trained)  # back to the trained weights for the comparison below
same_weights = copy.deepcopy(reference)
same_weights.load_state_dict(trained, strict=False)
ref_ticket2 = hf_tickets.prune(same_weights, 0.8, ticket=ticket)
facts["round2_equal"] = ticket2.equals(ref_ticket2)

if is_main_process():
    ticket2.save_pretrained(f"{out}/ticket")
    ref_ticket2.save_pretrained(f"{out}/ref_ticket")
dist.barrier()
dump(probe, facts, {**masks_of(ticket, "round1."), **masks_of(ticket2, "round2.")})
finish()
