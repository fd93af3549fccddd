"""What the recipes share once their task is prepared: parse the arguments, log, and run one of
a dense fine-tune, a transfer (fine-tune under a ticket) or a ticket search, ending like the stock
Hugging Face examples (``outputs``).

The building blocks live beside this module (``fine_tune``: θ0, Trainers, one fine-tune;
``search``: the IMP search and its export; ``outputs``: what a run leaves in ``output_dir``) and
are re-exported here for the demo, ``hf-tickets transfer`` and the reproduction.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import datasets
import transformers
from transformers import HfArgumentParser, TrainingArguments

from hf_tickets.core.atomic_files import atomic_write_json
from hf_tickets.core.collectives import is_main_process
from hf_tickets.core.errors import TicketError
from hf_tickets.core.structured import granularity_of
from hf_tickets.core.ticket import Ticket
from hf_tickets.experiments.arguments import ModelArguments, TicketArguments
from hf_tickets.experiments.fine_tune import (
    build_trainer,
    fine_tune,
    load_theta0,
    load_tokenizer,
    round_training_args,
    train_and_evaluate,
)
from hf_tickets.experiments.outputs import (
    check_hub_arguments,
    finish_evaluation,
    push_output_dir,
    resumable_checkpoint,
    stock_train_metrics,
    write_results,
    write_shrunk,
    write_ticket_outputs,
)
from hf_tickets.experiments.search import imp_config, run_imp_search
from hf_tickets.tasks.prepared import PreparedTask
from hf_tickets.training.imp_config import IMPConfig
from hf_tickets.training.launch import distributed_info, warn_if_single_process_requested

__all__ = [
    "build_trainer",
    "fine_tune",
    "imp_config",
    "load_theta0",
    "load_tokenizer",
    "parse_recipe_args",
    "round_training_args",
    "run_imp_search",
    "run_recipe",
    "setup_logging",
    "transfer",
]

logger = logging.getLogger(__name__)


def parse_recipe_args(data_arguments_class, argv=None, model_arguments_class=ModelArguments):
    """``(model, data, training, IMPConfig, ticket)`` arguments from the command line or one JSON file."""
    parser = HfArgumentParser(
        (model_arguments_class, data_arguments_class, TrainingArguments, IMPConfig, TicketArguments)
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        parsed = parser.parse_dict(json.loads(Path(argv[0]).read_text()))
    else:
        parsed = parser.parse_args_into_dataclasses(argv)
    _, _, training_args, search_args, ticket_args = parsed
    ticket_args.check(search_args, training_args)
    return parsed


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


def transfer(
    model_args,
    task: PreparedTask,
    training_args,
    ticket: Ticket,
    tokenizer=None,
    source: str = "",
    *,
    stock_outputs: bool = False,
    shrunk: dict | None = None,
) -> dict:
    """Fine-tune θ0 under ``ticket`` (no pruning) and score it; writes ``transfer_results.json``.

    ``stock_outputs``: end like a stock run (the recipes): resume from the last checkpoint, save the
    trained sparse model with its ticket, tokenizer and card, the results files, and push once;
    ``shrunk`` (``write_shrunk``'s options, with ``stock_outputs``): also the shrunk model in ``output_dir/shrunk``.
    """
    model = load_theta0(model_args, task, seed=training_args.seed)
    if stock_outputs:
        metrics, _ = _fine_tune_run(model, task, training_args, tokenizer, ticket, shrunk)
    else:
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
    if stock_outputs:
        push_output_dir(training_args)
    return record


def _fine_tune_run(model, task: PreparedTask, training_args, tokenizer, ticket: Ticket | None = None, shrunk=None):
    """One fine-tune ending as the stock scripts do; a ticket's files and card go beside the model
    (and with ``shrunk``, ``write_shrunk``'s options, the shrunk model in ``output_dir/shrunk``)."""
    checkpoint = resumable_checkpoint(training_args, searching=False)
    out = Path(training_args.output_dir)
    trainer = build_trainer(model, task, round_training_args(training_args, out), ticket, tokenizer=tokenizer)
    if ticket is not None and not training_args.do_train:
        ticket.apply(model)
    train_metrics, eval_metrics = train_and_evaluate(trainer, task, checkpoint)
    metrics = dict(eval_metrics)
    if training_args.do_train:
        if ticket is None:
            trainer.save_model()  # saves the tokenizer too, as in the stock scripts
        elif trainer.is_world_process_zero():
            ticket.config.provenance.setdefault("task", task.name)
            write_ticket_outputs(model, ticket, out, tokenizer, main_metric=task.main_metric)
            if shrunk is not None:
                write_shrunk(model, ticket, out, tokenizer, **shrunk)
        stock = stock_train_metrics(train_metrics, task)
        if trainer.is_world_process_zero():
            write_results(out, "train", stock)
        trainer.save_state()
        metrics.update(train_metrics)
    metrics.update(finish_evaluation(trainer, task, out, eval_metrics))
    return metrics, trainer


def run_recipe(
    model_args,
    task: PreparedTask,
    training_args,
    search_args: IMPConfig,
    ticket_args: TicketArguments,
    tokenizer=None,
    calibrate_head_steps: int | None = None,
):
    """What a recipe does once its task is prepared: transfer, a ticket search, or a dense fine-tune.

    ``calibrate_head_steps`` (MLM searches): see ``search.calibrate_theta0_head``."""
    warn_if_single_process_requested()
    check_hub_arguments(training_args)
    if training_args.do_predict and task.predict_fn is None:
        raise TicketError(f"--do_predict is not supported for {task.name}: it has no test set to predict")
    shrunk = {"stock_config": ticket_args.shrink_stock_config} if ticket_args.shrink else None
    if ticket_args.ticket:
        ticket = Ticket.from_pretrained(
            ticket_args.ticket, revision=ticket_args.ticket_revision, cache_dir=model_args.cache_dir
        )
        if shrunk is not None and granularity_of(ticket.config.strategy) == "weights":
            raise TicketError(
                f"--shrink removes whole heads and FFN neurons, but --ticket {ticket_args.ticket} was pruned by "
                f"{ticket.config.strategy!r} (single weights): nothing to remove; leave --shrink out"
            )
        logger.info(
            "Plan: one fine-tune of θ0 under the ticket %s (sparsity %.3f), no pruning.",
            ticket_args.ticket,
            ticket.sparsity,
        )
        return transfer(
            model_args, task, training_args, ticket, tokenizer, ticket_args.ticket, stock_outputs=True, shrunk=shrunk
        )
    if search_args.imp_rounds != 0:
        resumable_checkpoint(training_args, searching=True)
        return run_imp_search(
            model_args,
            task,
            training_args,
            search_args,
            tokenizer,
            calibrate_head_steps=calibrate_head_steps,
            shrink=ticket_args.shrink,
            shrink_stock_config=ticket_args.shrink_stock_config,
        )
    logger.info("Plan: one dense fine-tune (--imp_rounds 0), no pruning.")
    model = load_theta0(model_args, task, seed=training_args.seed)
    metrics, trainer = _fine_tune_run(model, task, training_args, tokenizer)
    push_output_dir(training_args, model_args, trainer, task)
    return metrics
