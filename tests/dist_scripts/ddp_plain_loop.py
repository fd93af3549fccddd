"""accelerate launch --multi_gpu --num_processes 2 ddp_plain_loop.py PROBE OUT

Two IMP rounds in a plain Accelerate loop (DDP, CPU, gloo): prune on every rank (masks computed
on rank 0 and broadcast), rewind to θ0, apply, train with ranks seeing different numbers of
batches (no hang: ``hf_tickets.core.collectives.join_uneven_inputs``; Accelerate's own is GPU-only),
re-zero after every optimizer step.
"""

import sys

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from common import dump, finish, masks_of, tiny_model
from transformers import BertForSequenceClassification

import hf_tickets
from hf_tickets.core.collectives import is_main_process, join_uneven_inputs
from hf_tickets.core.shards import zero_pruned_
from hf_tickets.training.launch import distributed_info, warn_if_single_process_requested

probe, out = sys.argv[1], sys.argv[2]
accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(even_batches=False))
facts = {"info": distributed_info(), "warning": warn_if_single_process_requested()}

model = tiny_model(BertForSequenceClassification)
theta0 = {k: v.clone() for k, v in model.state_dict().items()}
# 9 examples, batch 2, even_batches=False: rank 0 gets 3 batches, rank 1 gets 2.
generator = torch.Generator().manual_seed(0)
examples = [
    {"input_ids": torch.randint(1, 99, (8,), generator=generator), "labels": torch.tensor(i % 2)} for i in range(9)
]
loader = torch.utils.data.DataLoader(examples, batch_size=2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

ticket, zero_checks, batches = None, [], []
for round_, sparsity in enumerate((0.3, 0.5)):
    # Every rank prunes; rank 0's masks win, whatever the other ranks' weights say.
    if accelerator.process_index == 1:
        with torch.no_grad():  # make rank 1's weights disagree: its own masks would differ
            accelerator.unwrap_model(model).bert.encoder.layer[0].output.dense.weight.mul_(-3.0).add_(0.5)
    ticket = hf_tickets.prune(model, sparsity, ticket=ticket)
    facts[f"round{round_}_sparsity"] = ticket.sparsity
    accelerator.unwrap_model(model).load_state_dict(theta0)  # rewind to θ0
    ticket.apply(model)
    params = ticket.parameters_of(model)
    seen = 0
    with join_uneven_inputs(model):
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                for name, p in params.items():
                    zero_pruned_(p, ticket.masks[name])
            zero_checks.append(all(int(torch.count_nonzero(p[~ticket.masks[name]])) == 0 for name, p in params.items()))
            seen += 1
    batches.append(seen)
    if is_main_process():
        ticket.save_pretrained(f"{out}/round{round_}")
    accelerator.wait_for_everyone()

# A strategy that fails on the main process must fail on every rank, not leave the others waiting.
try:
    hf_tickets.prune(model, 0.5, strategy="random", no_such_option=1)
except Exception as err:  # rank 0: the strategy's own TypeError; the others: a TicketError naming it
    facts["failed_prune"] = f"{type(err).__name__}: {err}"
facts["batches"] = batches
facts["zero_after_every_step"] = all(zero_checks) and len(zero_checks) == sum(batches)
weights = {f"weight.{n}": p.detach() for n, p in ticket.parameters_of(model).items()}
dump(probe, facts, {**masks_of(ticket, "mask."), **weights})
finish()
