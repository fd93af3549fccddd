"""torchrun --nproc_per_node 2 fsdp2_imp.py PROBE OUT

IMPManager's plain loop on a model sharded with FSDP2 (fully_shard, CPU, gloo), beside the same
IMP run on an unsharded copy: θ0 is saved whole and rewound shard by shard, and every round's
ticket equals the unsharded run's (both ranks train on the same batch, so the averaged gradient
is the unsharded one).
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from common import dump, finish, masks_of, tiny_model
from safetensors.torch import load_file
from torch.distributed.fsdp import fully_shard
from transformers import BertForSequenceClassification

import hf_tickets
from hf_tickets.core.shards import full_weight
from hf_tickets.training.imp import IMPConfig, IMPManager

probe, out = sys.argv[1], Path(sys.argv[2])
dist.init_process_group("gloo")
generator = torch.Generator().manual_seed(0)
batch = {"input_ids": torch.randint(1, 99, (4, 8), generator=generator), "labels": torch.tensor([0, 1, 0, 1])}


def imp(sharded: bool) -> dict:
    model = tiny_model(BertForSequenceClassification, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    if sharded:
        for layer in model.bert.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
    output_dir = out / ("sharded" if sharded else "plain")
    manager = IMPManager(model, IMPConfig(sparsity_schedule="0.3,0.5"), str(output_dir))
    found = {"zero_after_every_step": True, "rewound": True, "masks": {}}
    found["types"] = sorted({type(p).__name__ for p in model.parameters()})
    for rnd in manager.rounds():
        params = rnd.ticket.parameters_of(model)
        # The round starts from θ0 under its mask, on every shard.
        for name, p in model.named_parameters():
            base_name = name.removeprefix("bert.")
            expected = theta0[name] * rnd.ticket.masks[base_name] if base_name in rnd.ticket.masks else theta0[name]
            found["rewound"] &= torch.equal(full_weight(p), expected)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(3):
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            manager.apply_masks()
            alive = sum(int(torch.count_nonzero(full_weight(p)[~rnd.ticket.masks[n]])) for n, p in params.items())
            found["zero_after_every_step"] &= alive == 0
        found["masks"].update(masks_of(rnd.ticket, f"{output_dir.name}.round{rnd.index}."))
        rnd.finish({"eval_accuracy": 0.5})
    found["theta0_file_whole"] = all(
        torch.equal(value, theta0[name]) for name, value in load_file(output_dir / "theta0.safetensors").items()
    )
    found["tickets"] = [hf_tickets.Ticket.from_pretrained(output_dir / f"round_{i:02d}" / "ticket") for i in range(3)]
    return found


plain, sharded = imp(sharded=False), imp(sharded=True)
facts = {
    "types": [plain["types"], sharded["types"]],
    "zero_after_every_step": plain["zero_after_every_step"] and sharded["zero_after_every_step"],
    "rewound": plain["rewound"] and sharded["rewound"],
    "theta0_file_whole": sharded["theta0_file_whole"],
    "tickets_equal": [a.equals(b) for a, b in zip(plain["tickets"], sharded["tickets"])],
}
dump(probe, facts, {**plain["masks"], **sharded["masks"]})
finish()
