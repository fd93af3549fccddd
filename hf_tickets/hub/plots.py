"""Sparsity-versus-score plots for model cards and reports (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # file output only: works on headless machines and in CI

import matplotlib.pyplot as plt  # noqa: E402

#: The name of the IMP line in the legend (rows of ``results`` without a ``baseline`` key).
TICKET_LABEL = "lottery ticket (IMP)"

Points = Sequence[tuple[float, float]]


def _points(rows: Sequence[Mapping], metric: str) -> list[tuple[float, float]]:
    points = [(float(r["sparsity"]), float(r[metric])) for r in rows if r.get(metric) is not None and "sparsity" in r]
    return sorted(points)


def split_results(results: Sequence[Mapping], metric: str) -> tuple[list[tuple[float, float]], dict[str, list]]:
    """The ticket's own points and, per ``baseline`` name (e.g. ``"random_pruning"``), the baseline's."""
    ticket_rows = [r for r in results if not r.get("baseline")]
    names = sorted({str(r["baseline"]) for r in results if r.get("baseline")})
    baselines = {name: _points([r for r in results if r.get("baseline") == name], metric) for name in names}
    return _points(ticket_rows, metric), baselines


def plot_sparsity_vs_score(
    results: Sequence[Mapping],
    metric: str,
    out_png: str | os.PathLike,
    full_score: float | None = None,
    full_std: float | None = None,
    baselines: Mapping[str, Points | Sequence[Mapping]] | None = None,
) -> Path:
    """Plot ``metric`` against sparsity and save it as a PNG.

    ``results`` are per-round dicts with ``sparsity`` and ``metric`` (rows carrying a ``baseline``
    name are drawn as that baseline); ``full_score`` (± ``full_std``) is the unpruned model, drawn as
    a horizontal line with a band; ``baselines`` adds lines given as ``(sparsity, score)`` pairs or
    rows like ``results``. Returns the path written.
    """
    ticket_points, found_baselines = split_results(results, metric)
    for name, points in (baselines or {}).items():
        rows = list(points)
        found_baselines[name] = _points(rows, metric) if rows and isinstance(rows[0], Mapping) else sorted(rows)
    if not ticket_points and not any(found_baselines.values()):
        raise ValueError(f"no result has both 'sparsity' and {metric!r}: nothing to plot")

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        if ticket_points:
            xs, ys = zip(*ticket_points)
            ax.plot([100 * x for x in xs], ys, marker="o", label=TICKET_LABEL)
        for name, points in found_baselines.items():
            if points:
                xs, ys = zip(*points)
                ax.plot([100 * x for x in xs], ys, marker="s", linestyle="--", label=name.replace("_", " "))
        if full_score is not None:
            ax.axhline(full_score, color="black", linewidth=1, label="full model")
            if full_std:
                ax.axhspan(full_score - full_std, full_score + full_std, color="black", alpha=0.1)
        ax.set_xlabel("sparsity (% of target weights pruned)")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)  # figures are global state in pyplot: never leak them across calls
    return out
