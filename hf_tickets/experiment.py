"""Train and score a prepared task with the stock ``Trainer``: dense, under a ticket, or from scratch.

The recipes, the demo, ``hf-tickets transfer`` and the IMP manager's Trainer path all fine-tune
through ``fine_tune`` so every run is built the same way: a fresh ``Trainer`` (fresh optimizer and
learning-rate schedule), ``TicketCallback`` when a ticket is given, and the task's own scoring.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import datasets
import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments

from .arguments import ModelArguments, TicketArguments
from .callback import TicketCallback
from .distributed import distributed_info, is_main_process, use_true_loss, warn_if_single_process_requested
from .fileio import atomic_write_json
from .tasks.prepared import PreparedTask
from .ticket import Ticket

logger = logging.getLogger(__name__)


def load_theta0(model_args, task: PreparedTask, seed: int = 0):
    """θ0: the pre-trained encoder with the task's head, initialised from ``seed``."""
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
        **task.model_kwargs,
    )
    torch.manual_seed(seed)  # the head's random init is part of θ0: same seed, same head
    return task.model_class.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
    )


def round_training_args(training_args: TrainingArguments, output_dir: str | Path, **overrides) -> TrainingArguments:
    """A copy of the user's TrainingArguments writing into ``output_dir`` (one per run or round)."""
    return dataclasses.replace(training_args, output_dir=str(output_dir), **overrides)


def build_trainer(model, task: PreparedTask, training_args: TrainingArguments, ticket: Ticket | None = None,
                  verify_base: bool = True, tokenizer=None, callbacks=()) -> Trainer:
    all_callbacks = list(callbacks)
    if ticket is not None:
        all_callbacks.insert(0, TicketCallback(ticket, verify_base=verify_base))
    return Trainer(
        model=use_true_loss(model),
        args=training_args,
        train_dataset=task.train_dataset,
        data_collator=task.data_collator,
        compute_metrics=task.compute_metrics,
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics,
        processing_class=tokenizer,
        callbacks=all_callbacks,
    )


def fine_tune(model, task: PreparedTask, training_args: TrainingArguments, ticket: Ticket | None = None,
              verify_base: bool = True, tokenizer=None, callbacks=(), resume_from_checkpoint=None) -> dict:
    """Train (if ``do_train``) and evaluate; returns the task's metrics plus train time and steps."""
    trainer = build_trainer(model, task, training_args, ticket, verify_base, tokenizer, callbacks)
    metrics: dict = {}
    if training_args.do_train:
        if task.train_dataset is None:
            raise ValueError(f"--do_train needs training data for {task.name}")
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        metrics["train_time_s"] = round(time.perf_counter() - start, 2)
        metrics["train_steps"] = result.global_step
        metrics["train_loss"] = result.training_loss
    elif ticket is not None:
        ticket.apply(model, verify_base=verify_base)
    if training_args.do_eval:
        metrics.update(task.evaluate(trainer))
    return metrics


# ----------------------------------------------------------------------------------- recipes
def parse_recipe_args(data_arguments_class, argv=None):
    """``(model, data, training, ticket)`` arguments from the command line or one JSON file, as the stock scripts."""
    parser = HfArgumentParser((ModelArguments, data_arguments_class, TrainingArguments, TicketArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    for lib_logger in (logging.getLogger("hf_tickets"), logger):
        lib_logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def load_tokenizer(model_args):
    return AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        use_fast=model_args.use_fast_tokenizer,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )


def transfer(model_args, task: PreparedTask, training_args, ticket: Ticket, tokenizer=None, source: str = "") -> dict:
    """Fine-tune θ0 under ``ticket`` (no pruning) and score it; writes ``transfer_results.json``."""
    model = load_theta0(model_args, task, seed=training_args.seed)
    metrics = fine_tune(model, task, training_args, ticket, tokenizer=tokenizer)
    record = {
        "source_ticket": source or ticket.config.base_model,
        "ticket_sparsity": ticket.sparsity,
        "ticket_provenance": ticket.config.provenance,
        "task": task.name,
        "main_metric": task.main_metric,
        "metrics": metrics,
        **distributed_info(),
    }
    if is_main_process():
        atomic_write_json(Path(training_args.output_dir) / "transfer_results.json", record)
    logger.info("transfer of %s (sparsity %.3f) to %s: %s = %s", record["source_ticket"], ticket.sparsity,
                task.name, task.main_metric, metrics.get(task.main_metric))
    return record


def run_recipe(model_args, task: PreparedTask, training_args, ticket_args: TicketArguments, tokenizer=None):
    """What a recipe does once its task is prepared: transfer, an IMP search, or a dense fine-tune."""
    warn_if_single_process_requested()
    if ticket_args.ticket:
        ticket = Ticket.from_pretrained(ticket_args.ticket, revision=ticket_args.ticket_revision,
                                        cache_dir=model_args.cache_dir)
        return transfer(model_args, task, training_args, ticket, tokenizer, source=ticket_args.ticket)
    if ticket_args.searches:
        from .imp_trainer import run_imp_search

        return run_imp_search(model_args, task, training_args, ticket_args, tokenizer)
    model = load_theta0(model_args, task, seed=training_args.seed)
    metrics = fine_tune(model, task, training_args, tokenizer=tokenizer)
    if is_main_process():
        atomic_write_json(Path(training_args.output_dir) / "all_results.json", metrics)
    return metrics
