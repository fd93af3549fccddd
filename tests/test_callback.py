"""TicketCallback with the stock Trainer: pruned weights stay exactly zero, checkpoints carry the ticket."""

from __future__ import annotations

import logging

import pytest
import torch
from tiny import tiny_model
from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import TrainerControl, TrainerState

import hf_tickets
from hf_tickets import Ticket, TicketError
from hf_tickets.training.callback import TicketCallback


class TokenFiveDataset(torch.utils.data.Dataset):
    """Separable task: label 1 iff token 5 occurs."""

    def __init__(self, n: int = 64, length: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(6, 99, (n, length), generator=g)
        self.labels = torch.arange(n) % 2
        positions = torch.randint(0, length, (n,), generator=g)
        self.input_ids[self.labels == 1, positions[self.labels == 1]] = 5

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        ids = self.input_ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def make_trainer(output_dir, model, callbacks=(), **overrides) -> Trainer:
    args = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        max_steps=6,
        learning_rate=1e-3,
        weight_decay=0.1,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    args.update(overrides)
    args = TrainingArguments(**args)
    return Trainer(model=model, args=args, train_dataset=TokenFiveDataset(), callbacks=list(callbacks))


def base_and_ticket(sparsity=0.5, **prune_options):
    model = tiny_model(BertForSequenceClassification)
    return model, hf_tickets.prune(model, sparsity, **prune_options)


def pruned_nonzero(ticket: Ticket, model) -> int:
    params = ticket.parameters_of(model)
    return sum(int(torch.count_nonzero(params[n].detach()[~m])) for n, m in ticket.masks.items())


def kept_values(ticket: Ticket, model) -> torch.Tensor:
    params = ticket.parameters_of(model)
    return torch.cat([params[n].detach()[m] for n, m in ticket.masks.items()]).clone()


def test_without_enforcement_adamw_revives_pruned_weights(tmp_path):
    # The control for the tests below: applying the mask once is not enough.
    model, ticket = base_and_ticket()
    ticket.apply(model)
    assert pruned_nonzero(ticket, model) == 0
    make_trainer(tmp_path, model).train()
    assert pruned_nonzero(ticket, model) > 0.9 * ticket.num_pruned


@pytest.mark.parametrize(
    "overrides",
    [{}, {"gradient_accumulation_steps": 2}, {"bf16": True}],
    ids=["plain", "grad_accumulation", "bf16_autocast"],
)
@pytest.mark.parametrize("mask_gradients", [False, True], ids=["weights_only", "masked_grads"])
def test_pruned_weights_exactly_zero_after_adamw_training(tmp_path, overrides, mask_gradients):
    model, ticket = base_and_ticket()
    before = kept_values(ticket, model)
    trainer = make_trainer(tmp_path, model, [TicketCallback(ticket, mask_gradients=mask_gradients)], **overrides)
    trainer.train()
    assert trainer.state.global_step == 6
    assert pruned_nonzero(ticket, model) == 0
    after = kept_values(ticket, model)
    assert (after != before).float().mean() > 0.9  # the surviving weights did train
    assert torch.count_nonzero(after) == after.numel()


class PrunedGradProbe(TrainerCallback):
    """Records, before each optimizer step (after clipping), the largest |grad| at pruned positions."""

    def __init__(self, ticket):
        self.ticket, self.seen = ticket, []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = self.ticket.parameters_of(model)
        self.seen.append(max(float(params[n].grad[~m].abs().max()) for n, m in self.ticket.masks.items()))


@pytest.mark.parametrize("mask_gradients", [True, False])
def test_pruned_gradients_are_zero_before_clipping_and_step(tmp_path, mask_gradients):
    model, ticket = base_and_ticket()
    probe = PrunedGradProbe(ticket)
    trainer = make_trainer(
        tmp_path,
        model,
        [TicketCallback(ticket, mask_gradients=mask_gradients), probe],
        max_steps=3,
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
    )
    trainer.train()
    assert len(probe.seen) == 3
    if mask_gradients:
        assert probe.seen == [0.0, 0.0, 0.0]  # so clipping and grad_norm see only the sub-network
    else:
        assert all(g > 0 for g in probe.seen)


def test_every_checkpoint_holds_the_ticket(tmp_path):
    model, ticket = base_and_ticket()
    make_trainer(tmp_path, model, [TicketCallback(ticket)], max_steps=4, save_strategy="steps", save_steps=2).train()
    for step in (2, 4):
        saved = Ticket.from_pretrained(tmp_path / f"checkpoint-{step}")
        assert saved.equals(ticket)
        assert saved.fingerprint.keys() == ticket.fingerprint.keys()


def test_resume_restores_the_checkpoint_ticket(tmp_path, caplog):
    model, ticket_a = base_and_ticket(0.5)
    make_trainer(tmp_path, model, [TicketCallback(ticket_a)], max_steps=4, save_strategy="steps", save_steps=2).train()

    # A fresh base model and a different ticket: resuming must continue with ticket A.
    fresh, ticket_b = base_and_ticket(0.5, strategy="random", seed=1)
    callback = TicketCallback(ticket_b)
    trainer = make_trainer(tmp_path, fresh, [callback], max_steps=6, save_strategy="steps", save_steps=2)
    with caplog.at_level(logging.WARNING, logger="hf_tickets.training.callback"):
        trainer.train(resume_from_checkpoint=True)  # -> output_dir/checkpoint-4
    assert trainer.state.global_step == 6
    assert callback.ticket.equals(ticket_a)
    assert "checkpoint-4" in caplog.text
    assert pruned_nonzero(ticket_a, fresh) == 0
    assert pruned_nonzero(ticket_b, fresh) > 0  # B was not applied
    assert Ticket.from_pretrained(tmp_path / "checkpoint-6").equals(ticket_a)


def test_resume_from_a_checkpoint_outside_output_dir(tmp_path):
    model, ticket_a = base_and_ticket(0.5)
    run1 = tmp_path / "run1"
    make_trainer(run1, model, [TicketCallback(ticket_a)], max_steps=2, save_strategy="steps", save_steps=2).train()
    checkpoint = str(run1 / "checkpoint-2")

    fresh, ticket_b = base_and_ticket(0.6)
    callback = TicketCallback(ticket_b)
    trainer = make_trainer(tmp_path / "run2", fresh, [callback], max_steps=4, resume_from_checkpoint=checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    assert callback.ticket.equals(ticket_a)
    assert pruned_nonzero(ticket_a, fresh) == 0


def test_resume_refuses_a_ticket_that_does_not_match_the_loaded_weights(tmp_path):
    model, ticket_a = base_and_ticket(0.5)
    run = tmp_path / "run"
    make_trainer(run, model, [TicketCallback(ticket_a)], max_steps=2, save_strategy="steps", save_steps=2).train()
    _, ticket_b = base_and_ticket(0.5, strategy="random", seed=1)
    stray = ticket_b.save_pretrained(tmp_path / "stray")  # not the checkpoint that gets loaded

    fresh = tiny_model(BertForSequenceClassification)
    trainer = make_trainer(run, fresh, [TicketCallback(ticket_a)], max_steps=4, resume_from_checkpoint=str(stray))
    with pytest.raises(TicketError, match="not saved with the checkpoint"):
        trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))


def test_resume_without_a_ticket_in_the_checkpoint_applies_the_given_ticket(tmp_path, caplog):
    model, ticket = base_and_ticket()
    make_trainer(tmp_path, model, max_steps=2, save_strategy="steps", save_steps=2).train()
    fresh = tiny_model(BertForSequenceClassification)
    with caplog.at_level(logging.WARNING, logger="hf_tickets.training.callback"):
        make_trainer(tmp_path, fresh, [TicketCallback(ticket)], max_steps=4).train(resume_from_checkpoint=True)
    assert "no ticket in" in caplog.text
    assert pruned_nonzero(ticket, fresh) == 0


def test_sparsity_is_logged_in_log_history(tmp_path):
    model, ticket = base_and_ticket(0.7)
    trainer = make_trainer(tmp_path, model, [TicketCallback(ticket)], max_steps=3)
    trainer.train()
    step_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in step_logs] == [1, 2, 3]
    assert all(entry["sparsity"] == ticket.sparsity for entry in step_logs)
    assert trainer.state.log_history[-1]["sparsity"] == ticket.sparsity  # the final train metrics too


def test_other_weights_are_refused_unless_verify_base_is_false(tmp_path):
    _, ticket = base_and_ticket()
    other = tiny_model(BertForSequenceClassification, seed=1)
    with pytest.raises(TicketError, match="fingerprint"):
        make_trainer(tmp_path, other, [TicketCallback(ticket)], max_steps=1).train()
    assert pruned_nonzero(ticket, other) > 0  # nothing was changed
    make_trainer(tmp_path, other, [TicketCallback(ticket, verify_base=False)], max_steps=2).train()
    assert pruned_nonzero(ticket, other) == 0


def test_wrapped_model_and_direct_events(tmp_path):
    # Under DDP the Trainer passes the unwrapped model, but a wrapper (anything with .module) works too.
    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    model, ticket = base_and_ticket()
    callback = TicketCallback(ticket)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state, control = TrainerState(), TrainerControl()
    with pytest.raises(TicketError, match="not been applied"):
        callback.measured_sparsity()
    callback.on_train_begin(args, state, control, model=Wrapper(model))
    assert pruned_nonzero(ticket, model) == 0
    with torch.no_grad():
        for p in ticket.parameters_of(model).values():
            p.add_(1.0)
    callback.on_optimizer_step(args, state, control)
    assert pruned_nonzero(ticket, model) == 0
    assert callback.measured_sparsity() == ticket.sparsity
    callback.on_train_end(args, state, control)
    assert callback._masking._hooks == []  # gradient hooks detached


def test_callback_needs_a_ticket():
    with pytest.raises(TicketError, match="needs a Ticket"):
        TicketCallback("bert-base-uncased")
