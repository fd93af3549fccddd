"""torchrun --nproc_per_node 2 fsdp2_ticket.py PROBE OUT

FSDP2 (fully_shard) on CPU/gloo: the ticket found on sharded weights equals the ticket found on
an unsharded twin, masks zero exactly the right entries of each local shard, training keeps them
zero, and the saved ticket and checkpoint are the ordinary unsharded files.
"""

import copy
import sys

import torch
import torch.distributed as dist
from common import dump, finish, masks_of, tiny_model
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor
from transformers import BertForMaskedLM

import hf_tickets
from hf_tickets.core.collectives import is_main_process
from hf_tickets.core.shards import full_state_dict, full_weight, load_full_state_dict, local_mask, local_view

probe, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
me = dist.get_rank()
facts = {}


def local_piece(full: torch.Tensor, p) -> torch.Tensor:
    """What this rank's shard of ``p`` should hold if ``p`` were ``full``."""
    return distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local()


def check_applied(ticket, sharded, reference, tag):
    """Local shards are the reference's masked weights: zero where pruned, untouched elsewhere."""
    shard_sizes = []
    for name, p in ticket.parameters_of(sharded).items():
        ref_weight = ticket.parameters_of(reference)[name].detach()
        local, keep = local_view(p), local_mask(ticket.masks[name], p)
        assert keep.shape == local.shape, (name, keep.shape, local.shape)
        assert torch.equal(keep, local_piece(ticket.masks[name], p)), name
        assert int(torch.count_nonzero(local[~keep])) == 0, f"{tag}: {name} has live pruned weights"
        assert torch.equal(local, local_piece(ref_weight, p)), f"{tag}: {name} local shard differs from the reference"
        shard_sizes.append(local.shape[0])
    facts[f"{tag}_shard_rows"] = shard_sizes


# ------------------------------------------------ BERT: per-layer + root sharding
torch.manual_seed(0)
# 37 rows: uneven shards (19 + 18). No dropout: sharded and unsharded training must see the same net.
model = tiny_model(BertForMaskedLM, intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
reference = copy.deepcopy(model)  # unsharded twin with the same weights
reference_theta0 = copy.deepcopy(model)
for layer in model.bert.encoder.layer:
    fully_shard(layer)
fully_shard(model)
facts["sharded_types"] = sorted({type(p).__name__ for p in model.parameters()})

ref_ticket = hf_tickets.prune(reference, 0.6)
ticket = hf_tickets.prune(model, 0.6)
facts["round1_equal"] = ticket.equals(ref_ticket)
facts["fingerprint_equal"] = all(torch.equal(v, ref_ticket.fingerprint[k]) for k, v in ticket.fingerprint.items())
assert facts["round1_equal"] and facts["fingerprint_equal"]

report = ticket.apply(model)
ref_ticket.apply(reference)
facts["similarity"] = report.base_similarity
check_applied(ticket, model, reference, "round1")

# A few optimizer steps on the same batch on both ranks (so the averaged gradient is the
# unsharded one), re-zeroing on the local shards as TicketCallback does after each step.
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
generator = torch.Generator().manual_seed(1)
batch = {"input_ids": torch.randint(0, 99, (4, 9), generator=generator)}
batch["labels"] = batch["input_ids"].clone()
params, ref_params = ticket.parameters_of(model), ticket.parameters_of(reference)
for step in range(3):
    for net, opt, targets in ((model, optimizer, params), (reference, ref_optimizer, ref_params)):
        net.train()
        net(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for name, p in targets.items():
                local_view(p).masked_fill_(~local_mask(ticket.masks[name], p), 0)
    for name, p in params.items():
        assert int(torch.count_nonzero(local_view(p)[~local_mask(ticket.masks[name], p)])) == 0, (step, name)
        full = full_weight(p)
        assert int(torch.count_nonzero(full[~ticket.masks[name]])) == 0, (step, name)
        torch.testing.assert_close(full, ref_params[name].detach(), rtol=1e-4, atol=1e-5)

# IMP round 2 on the trained weights: sharded vs the unsharded model given exactly those weights.
state = full_state_dict(model)
assert state.keys() == reference.state_dict().keys()  # tied weights under both names, as save_pretrained expects
same_weights = copy.deepcopy(reference)
same_weights.load_state_dict(state, strict=False)  # tied decoder weight comes from the embeddings
ticket2 = hf_tickets.prune(model, 0.8, ticket=ticket)
ref_ticket2 = hf_tickets.prune(same_weights, 0.8, ticket=ticket)
facts["round2_equal"] = ticket2.equals(ref_ticket2)
assert facts["round2_equal"]

# Rewind (IMP): θ0 loaded into the sharded model, each rank into its shard, then round 2's ticket.
theta0 = full_state_dict(reference_theta0)
load_full_state_dict(model, theta0)
ticket2.apply(model)
pruned_by = {f"bert.{n}": mask for n, mask in ticket2.masks.items()}  # model names -> round 2's masks
facts["rewound"] = all(
    torch.equal(full_weight(p), theta0[name] * pruned_by[name] if name in pruned_by else theta0[name])
    for name, p in model.named_parameters()
)
assert facts["rewound"]

# Ordinary files: the ticket and a dense checkpoint, written by rank 0 only.
if is_main_process():
    ticket2.save_pretrained(f"{out}/ticket")
    ref_ticket2.save_pretrained(f"{out}/ref_ticket")
    same_weights.save_pretrained(f"{out}/checkpoint", state_dict=dict(state))  # save_pretrained pops from it
dist.barrier()
loaded = BertForMaskedLM.from_pretrained(f"{out}/checkpoint").state_dict()
assert loaded.keys() == same_weights.state_dict().keys()
for name, value in same_weights.state_dict().items():
    assert torch.equal(loaded[name], value), name
facts["checkpoint_tensors"] = sum(name in state for name in loaded)
facts["loaded_ticket_equal"] = hf_tickets.Ticket.from_pretrained(f"{out}/ticket").equals(ticket2)

# ------------------------------------------- a model whose shards are empty on rank 1
torch.manual_seed(0)
toy = nn.Sequential(nn.Linear(4, 1), nn.Linear(1, 3))  # weights [1, 4] (rows 1 + 0) and [3, 1] (2 + 1)
toy_reference = copy.deepcopy(toy)
fully_shard(toy)
toy_ticket = hf_tickets.prune(toy, 0.5, targets=r"\d")
toy_ref_ticket = hf_tickets.prune(toy_reference, 0.5, targets=r"\d")
facts["toy_equal"] = toy_ticket.equals(toy_ref_ticket)
toy_ticket.apply(toy)
toy_ref_ticket.apply(toy_reference)
check_applied(toy_ticket, toy, toy_reference, "toy")

dump(probe, facts, {**masks_of(ticket, "round1."), **masks_of(ticket2, "round2."), **masks_of(toy_ticket, "toy.")})
finish()
