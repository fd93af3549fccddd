"""``hf-tickets transfer``: does a ticket found on one task work on others? (the paper's Section 5)

For every target task it fine-tunes the dense θ0 once (the full model's score) and θ0 under each
ticket, then writes a table: source ticket x target task -> score, beside the full model's score
and whether the ticket is *matching* there. Every run lands in its own folder and is skipped when
its result exists, so an interrupted table resumes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from hf_tickets.core.atomic_files import atomic_write_json, atomic_write_text
from hf_tickets.training.results import greater_is_better, resolve_tolerance, within_band

logger = logging.getLogger(__name__)

#: Folder and dev file of each task in the original GLUE layout (``glue/<folder>/{train,dev}.tsv``).
GLUE_FOLDERS = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}
FULL_MODEL = "full model"


def glue_files(glue_dir: str | Path, task: str) -> tuple[Path, Path]:
    if task not in GLUE_FOLDERS:
        raise ValueError(f"unknown GLUE task {task!r}; choose from {', '.join(GLUE_FOLDERS)}")
    folder = Path(glue_dir) / GLUE_FOLDERS[task]
    train, dev = folder / "train.tsv", folder / ("dev_matched.tsv" if task == "mnli" else "dev.tsv")
    for path in (train, dev):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: --glue_dir must hold the GLUE tsv folders ({GLUE_FOLDERS[task]}/...)"
            )
    return train, dev


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[-80:]


def transfer_rows(
    results: dict[tuple[str, str], dict], full_std: float | None = None, tolerance: float | None = None
) -> list[dict]:
    """``{(source, task): transfer record}`` -> table rows with the full model's score and matching."""
    rows = []
    for (source, task), record in results.items():
        if source == FULL_MODEL:
            continue
        metric = record["main_metric"]
        score = record["metrics"].get(metric)
        full = results.get((FULL_MODEL, task), {}).get("metrics", {}).get(metric)
        matching = None
        if score is not None and full is not None:
            tol, _ = resolve_tolerance(full, tolerance, full_std)
            matching = within_band(score, full, tol, greater_is_better(metric))
        rows.append(
            {
                "source": source,
                "task": task,
                "metric": metric,
                "score": score,
                "full_score": full,
                "matching": matching,
                "sparsity": record["ticket_sparsity"],
            }
        )
    return rows


def transfer_markdown(rows: list[dict]) -> str:
    lines = [
        "| source ticket | sparsity | target task | metric | score | full model | matching |",
        "|---|---:|---|---|---:|---:|:---:|",
    ]
    for r in rows:
        fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        mark = {True: "yes", False: "no", None: "—"}[r["matching"]]
        lines.append(
            f"| {r['source']} | {r['sparsity']:.3f} | {r['task']} | {r['metric']} | {fmt(r['score'])} | "
            f"{fmt(r['full_score'])} | {mark} |"
        )
    return "\n".join(lines)


def run_transfer(
    tickets: dict[str, object],
    tasks: list[str],
    model_args,
    training_args,
    glue_dir,
    max_seq_length: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    full_std: float | None = None,
    tolerance: float | None = None,
) -> list[dict]:
    """Fine-tune θ0 dense and under each ticket on each task; write ``transfer.json`` / ``transfer.md``."""
    from hf_tickets.experiments.arguments import GlueDataArguments
    from hf_tickets.experiments.experiment import fine_tune, load_theta0, load_tokenizer, round_training_args, transfer
    from hf_tickets.tasks.prepared import prepare_glue

    output_dir = Path(training_args.output_dir)
    tokenizer = load_tokenizer(model_args)
    results: dict[tuple[str, str], dict] = {}
    for task_name in tasks:
        train, dev = glue_files(glue_dir, task_name)
        data_args = GlueDataArguments(
            task_name=task_name,
            train_file=str(train),
            validation_file=str(dev),
            max_seq_length=max_seq_length,
            pad_to_max_length=False,
            max_train_samples=max_train_samples,
            max_eval_samples=max_eval_samples,
        )
        task = prepare_glue(data_args, tokenizer, cache_dir=model_args.cache_dir)
        for source, ticket in [(FULL_MODEL, None), *tickets.items()]:
            run_dir = output_dir / f"{_slug(source)}__{task_name}"
            done = run_dir / "transfer_results.json"
            if done.is_file():
                results[(source, task_name)] = json.loads(done.read_text())
                continue
            args = round_training_args(training_args, run_dir)
            if ticket is None:
                metrics = fine_tune(load_theta0(model_args, task, seed=args.seed), task, args, tokenizer=tokenizer)
                record = {
                    "source_ticket": source,
                    "ticket_sparsity": 0.0,
                    "task": task.name,
                    "main_metric": task.main_metric,
                    "metrics": metrics,
                }
                atomic_write_json(done, record)
            else:
                record = transfer(model_args, task, args, ticket, tokenizer, source=source)
            results[(source, task_name)] = record
            logger.info(
                "%s -> %s: %s = %s", source, task_name, task.main_metric, record["metrics"].get(task.main_metric)
            )
    rows = transfer_rows(results, full_std, tolerance)
    atomic_write_json(output_dir / "transfer.json", rows)
    atomic_write_text(output_dir / "transfer.md", transfer_markdown(rows) + "\n")
    print(transfer_markdown(rows))
    return rows


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "transfer", help="fine-tune θ0 under tickets on several GLUE tasks: a transfer table"
    )
    parser.add_argument("--ticket", action="append", required=True, help="ticket directory or Hub repo (repeatable)")
    parser.add_argument("--tasks", nargs="+", required=True, help=f"GLUE tasks: {' '.join(GLUE_FOLDERS)}")
    parser.add_argument("--model_name_or_path", required=True, help="the base model θ0 the tickets were found on")
    parser.add_argument("--glue_dir", required=True, help="folder with the GLUE tsv folders (CoLA/, SST-2/, ...)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--num_train_epochs", type=float, default=3.0)
    parser.add_argument("--max_steps", type=int, default=-1)
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--full_model_std", type=float, default=None, help="the paper's matching band: std over seeds")
    parser.add_argument("--matching_tolerance", type=float, default=None)
    parser.add_argument("--use_cpu", action="store_true")
    parser.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    from transformers import TrainingArguments

    from hf_tickets.core.ticket import Ticket
    from hf_tickets.experiments.arguments import ModelArguments

    tickets = {path: Ticket.from_pretrained(path) for path in args.ticket}
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        do_train=True,
        do_eval=True,
        use_cpu=args.use_cpu,
        seed=args.seed,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        save_strategy="no",
        report_to=[],
    )
    run_transfer(
        tickets,
        args.tasks,
        ModelArguments(model_name_or_path=args.model_name_or_path),
        training_args,
        args.glue_dir,
        args.max_seq_length,
        args.max_train_samples,
        args.max_eval_samples,
        args.full_model_std,
        args.matching_tolerance,
    )
    return 0
