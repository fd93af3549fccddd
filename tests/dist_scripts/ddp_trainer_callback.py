"""accelerate launch --multi_gpu --num_processes 2 ddp_trainer_callback.py PROBE OUT

The stock Trainer with TicketCallback under DDP (CPU, gloo): pruned weights are zero on every
rank after every optimizer step, only rank 0 writes tickets into checkpoints, and resuming from
a checkpoint continues with its ticket on both ranks.
"""

import sys

import torch
from common import dump, finish, masks_of, tiny_model
from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

import hf_tickets
from hf_tickets import Ticket, TicketCallback
from hf_tickets.core.collectives import rank
from hf_tickets.training.trainer_loss import use_true_loss

probe, out = sys.argv[1], sys.argv[2]

saves = []
_save = Ticket.save_pretrained


def counting_save(self, directory):  # who writes ticket files, and where
    saves.append(str(directory))
    return _save(self, directory)


Ticket.save_pretrained = counting_save


class Examples(torch.utils.data.Dataset):
    def __init__(self, n=24):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 99, (n, 8), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class ZeroProbe(TrainerCallback):
    """After each optimizer step (TicketCallback runs first), are this rank's pruned weights zero?"""

    def __init__(self, ticket_callback):
        self.ticket_callback, self.checks = ticket_callback, []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        ticket = self.ticket_callback.ticket
        alive = sum(
            int(torch.count_nonzero(p.detach()[~ticket.masks[n]])) for n, p in ticket.parameters_of(model).items()
        )
        self.checks.append((state.global_step, alive))


def train(max_steps, resume, sparsity):
    model = use_true_loss(tiny_model(BertForSequenceClassification))
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=2,
        max_steps=max_steps,
        save_steps=3,
        logging_steps=1,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        seed=0,
        disable_tqdm=True,
    )
    # Every rank prunes; the masks are rank 0's. Pruning needs the process group, which
    # TrainingArguments has started.
    callback = TicketCallback(hf_tickets.prune(model, sparsity))
    probe_callback = ZeroProbe(callback)
    trainer = Trainer(model=model, args=args, train_dataset=Examples(), callbacks=[callback, probe_callback])
    trainer.train(resume_from_checkpoint=resume)
    return callback, probe_callback, trainer


first, first_probe, _ = train(6, resume=None, sparsity=0.5)
saves_before_resume = len(saves)
# Resuming from checkpoint-6 must continue with ITS ticket (0.5), not the 0.3 one passed in.
second, second_probe, trainer = train(8, resume=True, sparsity=0.3)
facts = {
    "rank": rank(),
    "saves": saves,
    "saves_before_resume": saves_before_resume,
    "checks": first_probe.checks + second_probe.checks,
    "resumed_ticket_equal": second.ticket.equals(first.ticket),
    "global_step": trainer.state.global_step,
}
weights = {f"weight.{n}": p.detach() for n, p in second.ticket.parameters_of(trainer.model).items()}
dump(probe, facts, {**masks_of(second.ticket, "mask."), **weights})
finish()
