"""What a recipe leaves in ``output_dir``, as the stock Hugging Face examples do, and the final push.

A finished run holds the final model and tokenizer (plain ``from_pretrained`` loads them),
``train_results.json``, ``eval_results.json``, ``all_results.json`` (the Trainer's keys:
``train_runtime``, ``train_samples``, ``eval_samples``, MLM ``perplexity``...) and
``trainer_state.json``; after a ticket search or a transfer also the ticket files, its card and plot,
and with ``--shrink`` the physically smaller model in ``shrunk/``. ``--push_to_hub`` then uploads that
folder's files once (not ``shrunk/``, nor any intermediate round).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

from hf_tickets.core.atomic_files import atomic_write, atomic_write_json
from hf_tickets.core.collectives import is_main_process, on_main
from hf_tickets.core.errors import TicketError
from hf_tickets.core.shrink import RECORD_KEY, load_hint, save_shrunk, shrink
from hf_tickets.core.targets import unwrap_model
from hf_tickets.core.ticket import CONFIG_FILE, Ticket
from hf_tickets.hub.cards import plot_results, ticket_card, write_results_file
from hf_tickets.hub.hub_api import CARD_FILE, PLOT_FILE
from hf_tickets.hub.sparse_checkpoint import save_sparse_checkpoint
from hf_tickets.hub.upload import push_folder
from hf_tickets.tasks.prepared import PreparedTask
from hf_tickets.training.imp.run_state import STATE_FILE

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
ALL_RESULTS_FILE = "all_results.json"
#: ``--shrink``: the folder in output_dir holding the model with its whole pruned units removed.
SHRUNK_DIR = "shrunk"
#: hub_strategy values whose pushes would land intermediate checkpoints in the repo.
CHECKPOINT_HUB_STRATEGIES = ("checkpoint", "all_checkpoints")


# ------------------------------------------------------------------------------ before the run
def _contents(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def check_hub_arguments(training_args) -> None:
    strategy = str(getattr(training_args.hub_strategy, "value", training_args.hub_strategy))
    if training_args.push_to_hub and strategy in CHECKPOINT_HUB_STRATEGIES:
        raise TicketError(
            f"--hub_strategy {strategy} is not supported: the recipes push once, at the end, what output_dir "
            "holds (model, tokenizer, ticket, card, results); use --hub_strategy every_save or end"
        )


def resumable_checkpoint(training_args, searching: bool) -> str | None:
    """Last-checkpoint detection as in the stock scripts, with the overwrite rule made explicit.

    Decided once, on the main process, before anything is written, and shared with every rank: a rank
    looking at ``output_dir`` on its own could already see what the main process wrote there (its lock).
    """
    _ = training_args.device  # sets up the process group (as the Trainer would), so on_main is collective
    return on_main(lambda: _resumable_checkpoint(training_args, searching))


def _resumable_checkpoint(training_args, searching: bool) -> str | None:
    """Last-checkpoint detection as in the stock scripts, with the overwrite rule made explicit.

    transformers 5 has no ``--overwrite_output_dir``; a recipe never silently trains over an earlier
    run. Dense and transfer runs resume from ``--resume_from_checkpoint`` or the newest
    ``checkpoint-*`` in ``output_dir``; a search resumes the IMP run whose state ``output_dir`` holds.
    Any other non-empty ``output_dir`` is refused.
    """
    out = Path(training_args.output_dir)
    explicit = training_args.resume_from_checkpoint
    if searching:
        if explicit and out.resolve() not in Path(explicit).resolve().parents:
            raise TicketError(
                f"--resume_from_checkpoint {explicit}: an IMP search resumes from its own output_dir "
                f"({out}), round by round; pass that output_dir again instead"
            )
        if (out / STATE_FILE).is_file():
            logger.info(
                "%s holds an IMP search with %s: resuming it. Reused: θ0, the finished rounds (tickets, metrics, "
                "trained models) and the newest checkpoint of the round in progress",
                out,
                STATE_FILE,
            )
        elif _contents(out):
            raise TicketError(
                f"{out}: output_dir is not empty ({', '.join(_contents(out)[:5])}...) and holds no IMP search "
                f"to resume ({STATE_FILE} missing); pass a new --output_dir or empty it"
            )
        return None
    if not training_args.do_train:
        return None
    if explicit:
        return explicit
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last is not None:
        logger.info("Checkpoint detected, resuming training at %s. To train from scratch use a new --output_dir.", last)
        return last
    if _contents(out):
        raise TicketError(
            f"{out}: output_dir is not empty ({', '.join(_contents(out)[:5])}) and holds no checkpoint-* to resume "
            "from; pass a new --output_dir or empty it (transformers 5 has no --overwrite_output_dir)"
        )
    return None


# --------------------------------------------------------------------------------- results files
def write_results(output_dir: str | Path, split: str, metrics: dict) -> None:
    """``<split>_results.json`` and the merged ``all_results.json``, as ``Trainer.save_metrics`` writes them."""
    out = Path(output_dir)
    atomic_write_json(out / f"{split}_results.json", metrics)
    all_path = out / ALL_RESULTS_FILE
    merged = json.loads(all_path.read_text()) if all_path.is_file() else {}
    merged.update(metrics)
    atomic_write_json(all_path, merged)
    logger.info("***** %s metrics *****\n%s", split, "\n".join(f"  {k:<28} = {v}" for k, v in sorted(metrics.items())))


def stock_train_metrics(metrics: dict, task: PreparedTask) -> dict:
    """The Trainer's train metrics (no hf_tickets bookkeeping) plus ``train_samples``."""
    kept = {k: v for k, v in metrics.items() if k in ("epoch", "total_flos") or k.startswith("train_")}
    kept.pop("train_steps", None)
    kept.pop("train_time_s", None)
    kept["train_samples"] = len(task.train_dataset) if task.train_dataset is not None else 0
    return kept


def stock_eval_metrics(metrics: dict, task: PreparedTask) -> dict:
    """The eval metrics plus ``eval_samples`` (and MLM's ``perplexity``, the stock key)."""
    out = dict(metrics)
    eval_set = task.eval_datasets.get("eval")
    out["eval_samples"] = len(eval_set) if eval_set is not None else metrics.get("eval_samples", 0)
    if "eval_perplexity" in out:  # the MLM task's; run_mlm.py reports it as "perplexity"
        out["perplexity"] = out["eval_perplexity"]
    return out


def finish_evaluation(trainer, task: PreparedTask, output_dir, eval_metrics: dict | None = None) -> dict:
    """Evaluate (unless given), write the eval results, the eval predictions (SQuAD) and ``--do_predict`` files."""
    args = trainer.args
    metrics: dict = {}
    if args.do_eval:
        metrics = stock_eval_metrics(eval_metrics if eval_metrics is not None else task.evaluate(trainer), task)
        if trainer.is_world_process_zero():
            write_results(output_dir, "eval", metrics)
            if task.save_eval_predictions is not None:
                task.save_eval_predictions(output_dir)
    if args.do_predict:
        if task.predict_fn is None:
            raise TicketError(f"--do_predict is not supported for {task.name}")
        predict_metrics = task.predict_fn(trainer, output_dir)
        if predict_metrics and trainer.is_world_process_zero():  # run_qa saves them; run_glue returns none
            write_results(output_dir, "predict", predict_metrics)
    return metrics


def copy_file(source: Path, target: Path) -> None:
    data = source.read_bytes()
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))


# ---------------------------------------------------------------------------- ticket exports
def write_ticket_outputs(
    model,
    ticket: Ticket,
    output_dir,
    tokenizer=None,
    results: list | None = None,
    transfer: list | None = None,
    main_metric: str | None = None,
) -> None:
    """The sparse model, its ticket, tokenizer, card, plot and logged numbers in ``output_dir`` (one write each).

    The card is a transformers model card (the folder is a complete model repo, pushed as it is).
    """
    out = Path(output_dir)
    save_sparse_checkpoint(model, ticket, out, tokenizer=tokenizer)
    plot = plot_results(ticket, results, out / PLOT_FILE) if results else None
    numbers = write_results_file(out, ticket, results, transfer, main_metric) if results or transfer else None
    card = ticket_card(
        ticket,
        results=results,
        transfer=transfer,
        plot_path=plot.name if plot else None,
        checkpoint="dense",
        model_class=type(model).__name__,
        main_metric=main_metric,
        results_file=numbers.name if numbers else None,
    )
    card.save(out / CARD_FILE)


def write_shrunk(model, ticket: Ticket, output_dir, tokenizer=None, stock_config: bool = False) -> Path:
    """``--shrink``: ``output_dir/shrunk``, a copy of ``model`` without the heads and neurons ``ticket`` prunes whole.

    Main process only. The copy is shrunk, so ``model`` stays the sparse model the run evaluates and pushes.
    """
    smaller = shrink(copy.deepcopy(unwrap_model(model)), ticket, stock_config=stock_config)
    out = save_shrunk(smaller, Path(output_dir) / SHRUNK_DIR, tokenizer)
    record = getattr(smaller.config, RECORD_KEY)
    logger.info(
        "shrunk model in %s: parameters %d -> %d (%d heads and %d FFN neurons removed); load it with %s",
        out,
        record["parameters_before"],
        record["parameters_after"],
        sum(len(heads) for heads in record["removed_heads"].values()),
        sum(record["removed_neurons"].values()),
        load_hint(smaller, out),
    )
    return out


# ------------------------------------------------------------------------------------ the push
def push_output_dir(training_args, model_args=None, trainer=None, task: PreparedTask | None = None) -> None:
    """``--push_to_hub``: one final push of ``output_dir`` to ``--hub_model_id`` (default: its folder name)."""
    if not training_args.push_to_hub:
        return
    out = Path(training_args.output_dir)
    repo_id = training_args.hub_model_id or out.absolute().name
    if (out / CONFIG_FILE).is_file():  # a ticket beside the model: upload the folder's files as they are
        if not is_main_process():
            return
        info = push_folder(
            out,
            repo_id,
            revision=training_args.hub_revision,
            private=training_args.hub_private_repo,
            token=training_args.hub_token,
            commit_message="End of training",
        )
        logger.info("pushed %s to %s (%s)", out, repo_id, getattr(info, "oid", ""))
    elif trainer is not None:  # a dense run: the stock ending (on every process, as Trainer.push_to_hub wants)
        kwargs = {"finetuned_from": getattr(model_args, "model_name_or_path", None)}
        if task is not None and task.hub_dataset:
            kwargs["dataset"] = task.hub_dataset["dataset"]
        trainer.args.hub_model_id = repo_id
        trainer.push_to_hub(**kwargs)
        logger.info("pushed %s to %s", out, repo_id)
