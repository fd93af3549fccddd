"""Table 3's controls (issue 17): is the MLM ticket's gap to the task's own ticket the mask's, or the run's?

Every IMP ticket at 70% here nearly coincides with the others and with θ0's one-shot magnitude ticket
(``mask_overlap.md``): fine-tuning barely moves the pre-trained weights. So on the claim tasks (SST-2
and STS-B, whose ``imp_masks`` runs keep their masks) the Table 3 fine-tune (the transfer protocol:
θ0 with the seed's head, the ticket applied, trained once) runs with three tickets at the Table 3
sparsity, three seeds each: the calibrated MLM ticket, the task's own IMP ticket (the ``imp_masks``
run's, found from θ0) and θ0's magnitude ticket (``prune`` of θ0, no training). Seed 42 of the MLM
ticket is Table 3's own run. A gap between the MLM and the own ticket inside the seeds' spread is not
the mask's doing.

Layout: ``runs/controls/<source>@<sparsity>__<target>__seed<seed>/transfer_results.json``.
"""

from __future__ import annotations

from pathlib import Path

from reproduce_report import (
    TASK_TITLES,
    TaskSummary,
    fmt,
    mean_std,
    pct,
    read_json,
    transfer_dir_name,
)

SOURCES = {
    "mlm_calibrated": "MLM ticket (calibrated head)",
    "own_imp": "the task's own IMP ticket",
    "theta0_magnitude": "θ0's magnitude ticket (no training)",
}


def control_dir(runs_dir: Path, source: str, target: str, sparsity: float, seed: int, imp_seed: int) -> Path:
    if source == "mlm_calibrated" and seed == imp_seed:
        return runs_dir / "transfer" / transfer_dir_name(source, sparsity, target)  # Table 3's own run
    return runs_dir / "controls" / f"{transfer_dir_name(source, sparsity, target)}__seed{seed}"


def control_runs(settings, targets: list[str]):
    """(source, target, seed) of every control run, Table 3's own run left out (it is Table 3's step)."""
    for target in targets:
        for source in SOURCES:
            for seed in settings.seeds:
                if not (source == "mlm_calibrated" and seed == settings.imp_seed):
                    yield source, target, seed


def control_table(
    runs_dir: Path, settings, sparsity: float, targets: list[str], summaries: dict[str, TaskSummary]
) -> list[dict]:
    """Per target: the full model and, per ticket, its score by seed with mean and std."""
    entries = []
    for target in targets:
        s = summaries.get(target)
        if s is None:
            continue
        sources = {}
        for source in SOURCES:
            scores = {}
            for seed in settings.seeds:
                record = read_json(
                    control_dir(runs_dir, source, target, sparsity, seed, settings.imp_seed) / "transfer_results.json"
                )
                if record is not None and record["metrics"].get(s.metric) is not None:
                    scores[seed] = record["metrics"][s.metric]
            mean, std = mean_std(list(scores.values()))
            sources[source] = {"scores": scores, "mean": mean, "std": std}
        entries.append(
            {
                "target": target,
                "title": TASK_TITLES[target],
                "metric": s.metric,
                "full_mean": s.full_mean,
                "full_std": s.full_std,
                "sources": sources,
                "mlm_minus_own": gap(sources["mlm_calibrated"], sources["own_imp"]),
                "mlm_minus_theta0": gap(sources["mlm_calibrated"], sources["theta0_magnitude"]),
            }
        )
    return entries


def gap(a: dict, b: dict) -> dict | None:
    """a's mean minus b's, and whether it is inside the seeds' spread (at most the larger of the two stds)."""
    if a["mean"] is None or b["mean"] is None or a["std"] is None or b["std"] is None:
        return None
    diff = a["mean"] - b["mean"]
    return {"diff": diff, "within_noise": abs(diff) <= max(a["std"], b["std"])}


def gap_text(g: dict | None) -> str:
    if g is None:
        return "pending"
    return f"{g['diff']:+.3f} ({'within' if g['within_noise'] else 'outside'} the seeds' spread)"


def controls_markdown(entries: list[dict], sparsity: float) -> str:
    lines = ["| | " + " | ".join(e["title"] for e in entries) + " |", "|---|" + "---:|" * len(entries)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(e) for e in entries) + " |")

    def stat(mean, std, n=None):
        if mean is None:
            return "—"
        return (
            f"{mean:.3f}"
            + (f" ± {std:.3f}" if std is not None else "")
            + (f" ({n} seed{'s' if n > 1 else ''})" if n else "")
        )

    row("metric", lambda e: e["metric"].removeprefix("eval_"))
    row("full model (mean ± std over seeds)", lambda e: stat(e["full_mean"], e["full_std"]))
    for source, label in SOURCES.items():
        row(
            f"{label} @ {pct(sparsity)}",
            lambda e, k=source: stat(e["sources"][k]["mean"], e["sources"][k]["std"], len(e["sources"][k]["scores"])),
        )
        row(
            "  by seed",
            lambda e, k=source: ", ".join(f"{seed}: {fmt(v)}" for seed, v in e["sources"][k]["scores"].items()) or "—",
        )
    row("MLM ticket minus own ticket", lambda e: gap_text(e["mlm_minus_own"]))
    row("MLM ticket minus θ0's magnitude ticket", lambda e: gap_text(e["mlm_minus_theta0"]))
    return "\n".join(lines)
