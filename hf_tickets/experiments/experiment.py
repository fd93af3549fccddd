"""Train and score a prepared task with the stock ``Trainer``: dense, under a ticket, or from scratch.

The recipes, the demo, ``hf-tickets transfer`` and the IMP manager's Trainer path all fine-tune
through ``fine_tune`` so every run is built the same way: a fresh ``Trainer`` (fresh optimizer and
learning-rate schedule), ``TicketCallback`` when a ticket is given, and the task's own scoring.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

import datasets
import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments

from hf_tickets.core.atomic_files import atomic_write_json
from hf_tickets.core.collectives import is_main_process
from hf_tickets.core.ticket import Ticket
from hf_tickets.experiments.arguments import ModelArguments, TicketArguments
from hf_tickets.tasks.prepared import PreparedTask
from hf_tickets.training.callback import TicketCallback
from hf_tickets.training.head_calibration import (
    CALIBRATION_FILE,
    HeadCalibration,
    calibrate_mlm_head,
    resolve_calibration_steps,
)
from hf_tickets.training.imp import STATE_FILE, IMPConfig, IMPManager
from hf_tickets.training.launch import distributed_info, warn_if_single_process_requested
from hf_tickets.training.trainer_loss import use_true_loss

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
        data_collator=task.data_collator,
        compute_metrics=task.compute_metrics,
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics,
        processing_class=tokenizer,
        callbacks=all_callbacks,
    )


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
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    # One readable line per IMP round is the point of the run: INFO on the main process by default.
    ours = logging.INFO if training_args.log_level == "passive" and training_args.should_log else level
    logging.getLogger("hf_tickets").setLevel(ours)
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
    logger.info(
        "transfer of %s (sparsity %.3f) to %s: %s = %s",
        record["source_ticket"],
        ticket.sparsity,
        task.name,
        task.main_metric,
        metrics.get(task.main_metric),
    )
    return record


def run_recipe(
    model_args,
    task: PreparedTask,
    training_args,
    ticket_args: TicketArguments,
    tokenizer=None,
    calibrate_head_steps: int | None = None,
):
    """What a recipe does once its task is prepared: transfer, an IMP search, or a dense fine-tune.

    ``calibrate_head_steps`` (MLM searches): see ``calibrate_theta0_head``."""
    warn_if_single_process_requested()
    if ticket_args.ticket:
        ticket = Ticket.from_pretrained(
            ticket_args.ticket, revision=ticket_args.ticket_revision, cache_dir=model_args.cache_dir
        )
        return transfer(model_args, task, training_args, ticket, tokenizer, source=ticket_args.ticket)
    if ticket_args.imp_rounds != 0:
        return run_imp_search(
            model_args, task, training_args, ticket_args, tokenizer, calibrate_head_steps=calibrate_head_steps
        )
    model = load_theta0(model_args, task, seed=training_args.seed)
    metrics = fine_tune(model, task, training_args, tokenizer=tokenizer)
    if is_main_process():
        atomic_write_json(Path(training_args.output_dir) / "all_results.json", metrics)
    return metrics


def imp_config(ticket_args, task: PreparedTask) -> IMPConfig:
    """The ``IMPConfig`` part of the recipe's ticket arguments, matching on the task's metric by default."""
    values = {f.name: getattr(ticket_args, f.name) for f in dataclasses.fields(IMPConfig)}
    values["matching_metric"] = values["matching_metric"] or task.main_metric
    return IMPConfig(**values)


def calibrate_theta0_head(
    model, model_args, task: PreparedTask, training_args, requested_steps: int | None, tokenizer=None
) -> HeadCalibration | None:
    """MLM searches: calibrate a head the checkpoint lacks before θ0 is taken (``head_calibration``).

    ``requested_steps`` None = automatic (only if the checkpoint has no MLM head), 0 = never. A resumed
    search takes θ0 from its own files, so it keeps the record written when it started.
    """
    from transformers import DataCollatorForLanguageModeling

    collator = task.data_collator
    if not isinstance(collator, DataCollatorForLanguageModeling):
        return None
    record = Path(training_args.output_dir) / CALIBRATION_FILE
    if (Path(training_args.output_dir) / STATE_FILE).is_file():
        return HeadCalibration.load(record) if record.is_file() else None
    steps = resolve_calibration_steps(requested_steps, model_args.model_name_or_path)
    if not steps:
        return None
    calibration = calibrate_mlm_head(
        model,
        task.train_dataset,
        task.eval_datasets.get("eval"),
        tokenizer or collator.tokenizer,
        training_args,
        steps,
        mlm_probability=collator.mlm_probability,
        seed=training_args.seed,
    )
    if is_main_process():
        calibration.save(record)
    return calibration


def run_imp_search(
    model_args,
    task: PreparedTask,
    training_args,
    ticket_args,
    tokenizer=None,
    dense_round_steps: int | None = None,
    calibrate_head_steps: int | None = None,
) -> dict:
    """IMP (or a baseline) with one fresh Trainer per round; exports the found ticket with its card.

    ``dense_round_steps`` cuts round 0 (θ0, dense) to that many optimizer steps: for a random-pruning
    baseline run beside IMP, whose round 0 is the same fine-tune and whose masks do not depend on
    trained weights. Round 0 is then no full-model reference, so no ticket is exported as matching.
    """
    config = imp_config(ticket_args, task)
    model = load_theta0(model_args, task, seed=training_args.seed)
    calibration = calibrate_theta0_head(model, model_args, task, training_args, calibrate_head_steps, tokenizer)
    manager = IMPManager(model, config, output_dir=training_args.output_dir)  # θ0 = what the model holds now

    def build(model, rnd):
        cut = {"max_steps": dense_round_steps} if rnd.index == 0 and dense_round_steps else {}
        return build_trainer(
            model, task, round_training_args(training_args, rnd.checkpoint_dir, **cut), tokenizer=tokenizer
        )

    results = manager.run_with_trainer(build, evaluate=task.evaluate if training_args.do_eval else None)
    if is_main_process() and results["rounds"] and not dense_round_steps:
        extra = {"head_calibration": calibration.to_provenance()} if calibration else None
        export_found_ticket(manager, task, model_args.model_name_or_path, extra_provenance=extra)
    return results


def export_found_ticket(
    manager: IMPManager, task: PreparedTask, base_model: str, extra_provenance: dict | None = None
) -> Path:
    """``output_dir/ticket``: the matching ticket (else the sparsest trained), its card and plot."""
    from hf_tickets.hub.cards import plot_results, ticket_card

    results = manager.results
    chosen = (results.get("matching") or {}).get("round") or None  # round 0 is the dense model, not a ticket
    index = chosen if chosen is not None else results["rounds"][-1]["round"]
    ticket = manager.round_ticket(index)
    ticket.config.base_model = ticket.config.base_model or base_model
    ticket.config.provenance.update(task=task.name, datasets=task.datasets, matching=chosen is not None)
    ticket.config.provenance.update(extra_provenance or {})
    out = Path(manager.output_dir) / "ticket"
    ticket.save_pretrained(out)
    plot = plot_results(ticket, results["rounds"], out / "sparsity_vs_score.png")
    card = ticket_card(ticket, results=results["rounds"], plot_path=plot.name if plot else None)
    card.save(out / "README.md")
    logger.info(
        "ticket of round %d (sparsity %.3f, %s) written to %s",
        index,
        ticket.sparsity,
        "matching" if chosen is not None else "not matching",
        out,
    )
    return out
