"""Train and score a prepared task with the stock ``Trainer``: dense, under a ticket, or from scratch.

The recipes, the demo, ``hf-tickets transfer`` and the IMP search all fine-tune through
``build_trainer`` so every run is built the same way: a fresh ``Trainer`` (fresh optimizer and
learning-rate schedule), the task's evaluation set as ``eval_dataset`` (so ``--eval_strategy``,
``--load_best_model_at_end`` and early stopping work), ``TicketCallback`` when a ticket is given,
and the task's own scoring.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, Trainer, TrainingArguments

from hf_tickets.core.ticket import Ticket
from hf_tickets.tasks.prepared import PreparedTask
from hf_tickets.training.callback import TicketCallback
from hf_tickets.training.trainer_loss import use_true_loss


def _model_config(model_args, task: PreparedTask):
    common = dict(
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    if model_args.config_name or model_args.model_name_or_path:
        return AutoConfig.from_pretrained(
            model_args.config_name or model_args.model_name_or_path, **common, **task.model_kwargs
        )
    # run_mlm's --model_type: a fresh config of that type, with --config_overrides on top.
    config = AutoConfig.for_model(model_args.model_type, **task.model_kwargs)
    if getattr(model_args, "config_overrides", None):
        config.update_from_string(model_args.config_overrides)
    return config


def load_theta0(model_args, task: PreparedTask, seed: int = 0):
    """θ0: the pre-trained encoder with the task's head (or a fresh ``--model_type`` model), seeded by ``seed``."""
    config = _model_config(model_args, task)
    torch.manual_seed(seed)  # the head's random init is part of θ0: same seed, same head
    if not model_args.model_name_or_path:
        return task.model_class.from_config(config, trust_remote_code=model_args.trust_remote_code)
    extra = {}
    if getattr(model_args, "dtype", None):
        extra["dtype"] = model_args.dtype
    if getattr(model_args, "low_cpu_mem_usage", False):
        extra["low_cpu_mem_usage"] = True
    return task.model_class.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **extra,
    )


def load_tokenizer(model_args):
    return AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        use_fast=model_args.use_fast_tokenizer,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )


def round_training_args(training_args: TrainingArguments, output_dir: str | Path, **overrides) -> TrainingArguments:
    """A copy of the user's TrainingArguments writing into ``output_dir`` (one per run or round).

    The copy never pushes to the Hub by itself: a recipe pushes once, at the end, what its
    ``output_dir`` holds (an intermediate round must never land in the user's repo).
    """
    overrides.setdefault("push_to_hub", False)
    return dataclasses.replace(training_args, output_dir=str(output_dir), **overrides)


def build_trainer(
    model,
    task: PreparedTask,
    training_args: TrainingArguments,
    ticket: Ticket | None = None,
    verify_base: bool = True,
    tokenizer=None,
    callbacks=(),
) -> Trainer:
    all_callbacks = list(callbacks)
    if ticket is not None:
        all_callbacks.insert(0, TicketCallback(ticket, verify_base=verify_base))
    return Trainer(
        model=use_true_loss(model),
        args=training_args,
        train_dataset=task.train_dataset,
        eval_dataset=task.eval_datasets.get("eval"),
        data_collator=task.data_collator,
        compute_metrics=task.compute_metrics,
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics,
        processing_class=tokenizer,
        callbacks=all_callbacks,
    )


def train_and_evaluate(trainer: Trainer, task: PreparedTask, resume_from_checkpoint=None) -> tuple[dict, dict]:
    """The Trainer's train metrics (``train_runtime``, ``train_loss``...) and the task's eval metrics."""
    args = trainer.args
    train_metrics: dict = {}
    if args.do_train:
        if task.train_dataset is None:
            raise ValueError(f"--do_train needs training data for {task.name}")
        result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        train_metrics = {**result.metrics, "train_steps": result.global_step}
    eval_metrics = task.evaluate(trainer) if args.do_eval else {}
    return train_metrics, eval_metrics


def fine_tune(
    model,
    task: PreparedTask,
    training_args: TrainingArguments,
    ticket: Ticket | None = None,
    verify_base: bool = True,
    tokenizer=None,
    callbacks=(),
    resume_from_checkpoint=None,
) -> dict:
    """Train (if ``do_train``) and evaluate; returns the task's metrics plus train time and steps."""
    trainer = build_trainer(model, task, training_args, ticket, verify_base, tokenizer, callbacks)
    if not training_args.do_train and ticket is not None:
        ticket.apply(model, verify_base=verify_base)
    train_metrics, eval_metrics = train_and_evaluate(trainer, task, resume_from_checkpoint)
    metrics: dict = {}
    if train_metrics:
        metrics["train_time_s"] = round(train_metrics["train_runtime"], 2)
        metrics["train_steps"] = train_metrics["train_steps"]
        metrics["train_loss"] = train_metrics["train_loss"]
    metrics.update(eval_metrics)
    return metrics
