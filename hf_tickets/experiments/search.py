"""A ticket search from a recipe: IMP (or a baseline) with one fresh Trainer per round.

Each round's Trainer ends like a stock run in its own folder (``round_XX/checkpoints``: the trained
model, tokenizer and ``trainer_state.json``), so the round that is finally exported can be read back
from there. Only the rounds that may still be exported keep their trained weights: the matching
round so far and the latest one.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from transformers import TrainingArguments

from hf_tickets.core.collectives import barrier, is_main_process
from hf_tickets.core.errors import TicketError
from hf_tickets.core.pruning import prune
from hf_tickets.core.strategies import get_strategy
from hf_tickets.experiments.fine_tune import build_trainer, load_theta0, round_training_args
from hf_tickets.experiments.outputs import (
    TRAINER_STATE_FILE,
    copy_file,
    finish_evaluation,
    push_output_dir,
    stock_train_metrics,
    write_results,
    write_shrunk,
    write_ticket_outputs,
)
from hf_tickets.tasks.prepared import PreparedTask
from hf_tickets.training.head_calibration import (
    CALIBRATION_FILE,
    HeadCalibration,
    calibrate_mlm_head,
    resolve_calibration_steps,
)
from hf_tickets.training.imp import IMPManager
from hf_tickets.training.imp.run_state import CHECKPOINT_DIR, STATE_FILE
from hf_tickets.training.imp_config import IMPConfig

logger = logging.getLogger(__name__)

#: The weights files of a round's trained model (``save_pretrained``'s single file, or shards and their index).
ROUND_WEIGHTS_GLOB = "model*.safetensors*"


def imp_config(config: IMPConfig, task: PreparedTask) -> IMPConfig:
    """``config`` matching on the task's main metric unless it names one."""
    if not isinstance(config, IMPConfig):
        raise TypeError(f"run_imp_search takes an IMPConfig, got {type(config).__name__}")
    return dataclasses.replace(config, matching_metric=config.matching_metric or task.main_metric)


def describe_plan(config: IMPConfig, training_args: TrainingArguments) -> str:
    """One paragraph saying how many fine-tunes the search will run, and how to run just one."""
    schedule = config.schedule()
    sparsities = ", ".join(f"{s:.3f}" for s in schedule)
    length = (
        f"{training_args.max_steps} steps"
        if training_args.max_steps > 0
        else f"{training_args.num_train_epochs:g} epochs"
    )
    return (
        f"Plan: a lottery-ticket search ({'IMP' if config.baseline == 'none' else config.baseline}), "
        f"{len(schedule)} fine-tunes of {length} each: round 0 trains the full model, then {len(schedule) - 1} "
        f"pruning rounds at sparsities [{sparsities}]. For a single dense fine-tune instead pass --imp_rounds 0; "
        f"to fine-tune under an existing ticket pass --ticket DIR_OR_REPO."
    )


def run_imp_search(
    model_args,
    task: PreparedTask,
    training_args,
    ticket_args: IMPConfig,
    tokenizer=None,
    dense_round_steps: int | None = None,
    *,
    keep_round_models: bool = True,
    calibrate_head_steps: int | None = None,
    shrink: bool = False,
    shrink_stock_config: bool = False,
) -> dict:
    """IMP (or a baseline) with one fresh Trainer per round; returns the manager's results.

    ``ticket_args``: the search settings (``IMPConfig``; ``matching_metric`` defaults to the task's).
    ``dense_round_steps`` cuts round 0 (θ0, dense) to that many optimizer steps: for a random-pruning
    baseline run beside IMP, whose round 0 is the same fine-tune and whose masks do not depend on
    trained weights (no ticket is exported then: round 0 is no full-model reference).
    ``keep_round_models``: each round saves its trained model (the recipes export
    one of them); older rounds' weights are deleted once they can no longer be exported. At the end
    ``output_dir`` holds the exported round's model, ticket, card and the stock results files
    (``export_search``), pushed once with ``--push_to_hub``.
    ``calibrate_head_steps`` (MLM searches): see :func:`calibrate_theta0_head`. ``shrink``: the export also
    writes ``output_dir/shrunk`` (``outputs.write_shrunk``; ``shrink_stock_config``: its ``stock_config``).
    """
    manager = manager_for_search(model_args, task, training_args, ticket_args, calibrate_head_steps, tokenizer)
    results = search_with_manager(manager, task, training_args, tokenizer, dense_round_steps, keep_round_models)
    if results["rounds"] and keep_round_models and not dense_round_steps:
        shrunk = {"stock_config": shrink_stock_config} if shrink else None
        results["exported"] = export_search(manager, task, training_args, tokenizer, shrunk)
    return results


def manager_for_search(
    model_args,
    task: PreparedTask,
    training_args,
    config: IMPConfig,
    calibrate_head_steps: int | None = None,
    tokenizer=None,
) -> IMPManager:
    config = imp_config(config, task)
    logger.info(describe_plan(config, training_args))
    model = load_theta0(model_args, task, seed=training_args.seed)
    check_reachable(model, config)  # also when resuming (a longer schedule); never per-rank file checks: it prunes
    calibrate_theta0_head(model, model_args, task, training_args, calibrate_head_steps, tokenizer)
    return IMPManager(model, config, output_dir=training_args.output_dir)  # θ0 = what the model holds now


def check_reachable(model, config: IMPConfig) -> None:
    """Refuse, before round 0 trains, a structured schedule whose last sparsity whole units cannot reach.

    Every layer keeps one unit of each kind and targets outside the units stay dense, so the reachable
    maximum depends only on the model's shapes: one prune of θ0 at the last sparsity says whether it is met.
    Called on every rank alike (``prune`` shares the main process's masks).
    """
    if not getattr(get_strategy(config.strategy), "whole_units", False) or config.baseline == "random_reinit":
        return
    last = config.schedule()[-1]
    try:
        prune(model, last, strategy=config.strategy, targets=config.targets)
    except TicketError as err:
        raise TicketError(
            f"--ticket_granularity {config.granularity} (--strategy {config.strategy}, --targets "
            f"{config.targets}) cannot reach the last round's sparsity {last:g} (--target_sparsity or "
            f"--sparsity_schedule): {err}"
        ) from None


def calibrate_theta0_head(
    model, model_args, task: PreparedTask, training_args, requested_steps: int | None, tokenizer=None
) -> HeadCalibration | None:
    """MLM searches: calibrate a head the checkpoint lacks before θ0 is taken (``training.head_calibration``).

    ``requested_steps`` None = automatic (only if the checkpoint has no MLM head), 0 = never. A resumed
    search takes θ0 from its own files, so it keeps the record (``head_calibration.json``) written when it started.
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


def search_with_manager(
    manager: IMPManager,
    task: PreparedTask,
    training_args,
    tokenizer=None,
    dense_round_steps: int | None = None,
    keep_round_models: bool = True,
) -> dict:
    def build(model, rnd):
        if keep_round_models:
            drop_stale_round_models(manager)
        cut = {"max_steps": dense_round_steps} if rnd.index == 0 and dense_round_steps else {}
        args = round_training_args(training_args, rnd.checkpoint_dir, resume_from_checkpoint=None, **cut)
        return build_trainer(model, task, args, tokenizer=tokenizer)

    def end_round(trainer) -> dict:
        if keep_round_models and trainer.args.do_train:
            trainer.save_model()  # the stock ending, in the round's folder: model (pruned weights zero) + tokenizer
            trainer.save_state()
        return task.evaluate(trainer) if trainer.args.do_eval else {}

    results = manager.run_with_trainer(build, evaluate=end_round)
    if keep_round_models:
        drop_stale_round_models(manager)
    return results


def chosen_round(results: dict) -> tuple[int, bool]:
    """The round to export: the matching one (round 0 is the dense model, not a ticket), else the sparsest."""
    matching = (results.get("matching") or {}).get("round") or None
    if matching is not None:
        return matching, True
    return results["rounds"][-1]["round"], False


def round_model_dir(manager: IMPManager, index: int) -> Path:
    return manager.round_dir(index) / CHECKPOINT_DIR


def drop_stale_round_models(manager: IMPManager) -> None:
    """Delete the trained weights of finished rounds that can no longer be exported."""
    results = manager.results
    if not results["rounds"] or not is_main_process():
        return
    keep = {results["rounds"][-1]["round"], (results.get("matching") or {}).get("round")}
    for row in results["rounds"]:
        if row["round"] in keep:
            continue
        for path in round_model_dir(manager, row["round"]).glob(ROUND_WEIGHTS_GLOB):
            path.unlink()
            logger.debug("round %d can no longer be exported: removed %s", row["round"], path)


def export_search(
    manager: IMPManager, task: PreparedTask, training_args, tokenizer, shrunk: dict | None = None
) -> dict:
    """End the search like a stock run: the chosen round's trained sparse model in ``output_dir`` with its
    ticket, card and plot, its train results and ``trainer_state.json``, a final evaluation, the push.
    ``shrunk`` (``write_shrunk``'s options): also the shrunk model in ``output_dir/shrunk``."""
    results = manager.results
    index, matching = chosen_round(results)
    row = next(r for r in results["rounds"] if r["round"] == index)
    source = round_model_dir(manager, index)
    if not (source / "config.json").is_file():
        raise TicketError(
            f"{source}: config.json missing: the trained model of round {index} was not saved (a run started by an "
            "older version?); rerun the search in a new output_dir"
        )
    ticket = manager.round_ticket(index)  # the one read of the round's ticket; written once below
    # base_model was recorded at prune time (a Hub id and revision, never a local path): left as it is.
    ticket.config.provenance.update(
        task=task.name,
        datasets=task.datasets,
        matching=matching,
        main_metric=task.main_metric,
        **(task.hub_dataset or {}),
    )
    out = Path(training_args.output_dir)
    if (out / CALIBRATION_FILE).is_file():  # θ0's MLM head was calibrated: part of how the ticket was found
        ticket.config.provenance["head_calibration"] = HeadCalibration.load(out / CALIBRATION_FILE).to_provenance()
    model = task.model_class.from_pretrained(source)
    if is_main_process():
        write_ticket_outputs(model, ticket, out, tokenizer, results=results["rounds"], main_metric=task.main_metric)
        if (source / TRAINER_STATE_FILE).is_file():
            copy_file(source / TRAINER_STATE_FILE, out / TRAINER_STATE_FILE)
        if training_args.do_train:
            write_results(out, "train", stock_train_metrics(row, task))
        if shrunk is not None:
            write_shrunk(model, ticket, out, tokenizer, **shrunk)
    barrier()
    trainer = build_trainer(model, task, round_training_args(training_args, out), tokenizer=tokenizer)
    # The round's own scores are the exported model's; evaluate again only to write eval predictions (SQuAD).
    scores = None if task.save_eval_predictions else {k: v for k, v in row.items() if k.startswith("eval_")}
    finish_evaluation(trainer, task, out, scores)
    logger.info(
        "exported round %d (sparsity %.3f, %s): model, tokenizer, ticket and card in %s",
        index,
        ticket.sparsity,
        "matching" if matching else "sparsest; no round matched",
        out,
    )
    push_output_dir(training_args)
    return {"round": index, "sparsity": ticket.sparsity, "matching": matching}
