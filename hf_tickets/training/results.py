"""IMP results: one row per round in ``results.json`` and ``results.csv``, and the *matching* ticket.

A row is flat, so ``hf_tickets.hub.cards`` and ``hf_tickets.hub.plots`` read it as is::

    {"round": 2, "sparsity": 0.19, "baseline": None, "eval_accuracy": 0.93, ..., "train_time_s": 41.2,
     "train_steps": 600, "planned_steps": 600, "early_bird_stopped": False, "early_bird_steps_saved": 0,
     "ticket": "round_02/ticket", "early_bird_distances": [[10, 0.31], [20, 0.08]], "early_bird_start_distance": 0.4}

``early_bird_distances`` is the early-bird curve, ``[step, distance]`` at every check after the
first (empty without early bird), ``early_bird_start_distance`` the first check's distance to the mask of
the round's starting weights (None without a check): in ``results.json`` and the round's
``metrics.json``, not CSV columns.

The matching ticket (the paper, section 3) is the highest-sparsity round whose score is within a
tolerance of the full model's (round 0): one standard deviation over seeds in the paper. Here the
tolerance is ``matching_tolerance`` if given, else ``full_model_std`` if given, else 1% of the full
model's score (relative, so it means the same for accuracy in [0, 1] and F1 in [0, 100]).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_tickets.core.atomic_files import atomic_write_json, atomic_write_text
from hf_tickets.core.errors import TicketError

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
DEFAULT_RELATIVE_TOLERANCE = 0.01
#: Row keys that are bookkeeping, not scores: before and after the metrics in the CSV.
LEADING_KEYS = ("round", "sparsity", "baseline")
TRAILING_KEYS = (
    "train_time_s",
    "train_steps",
    "planned_steps",
    "early_bird_stopped",
    "early_bird_steps_saved",
    "ticket",
)
REFERENCE_KEYS = ("full_score", "full_std")
#: Early-bird detail: JSON only (not CSV columns, not metrics).
EARLY_BIRD_KEYS = ("early_bird_distances", "early_bird_start_distance")
BOOKKEEPING_KEYS = (*TRAILING_KEYS, *REFERENCE_KEYS, *EARLY_BIRD_KEYS)


def make_row(
    round_index: int, sparsity: float, baseline: str | None, metrics: Mapping[str, Any], **bookkeeping
) -> dict:
    row: dict[str, Any] = {"round": round_index, "sparsity": sparsity, "baseline": baseline}
    row.update({k: _plain(v) for k, v in metrics.items() if k not in (*LEADING_KEYS, *BOOKKEEPING_KEYS)})
    row.update({k: bookkeeping.get(k) for k in TRAILING_KEYS})
    row["early_bird_distances"] = [list(point) for point in bookkeeping.get("early_bird_distances") or ()]
    row["early_bird_start_distance"] = bookkeeping.get("early_bird_start_distance")
    return row


def _plain(value):
    """Metric values as JSON-friendly Python numbers (numpy / torch scalars -> Python)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError, RuntimeError):
            return str(value)
    return value


def greater_is_better(metric: str, explicit: bool | None = None) -> bool:
    return explicit if explicit is not None else "loss" not in metric


def resolve_tolerance(
    full_score: float, matching_tolerance: float | None, full_model_std: float | None
) -> tuple[float, str]:
    if matching_tolerance is not None:
        return float(matching_tolerance), "matching_tolerance"
    if full_model_std is not None:
        return float(full_model_std), "full_model_std (one standard deviation, as in the paper)"
    return abs(
        full_score
    ) * DEFAULT_RELATIVE_TOLERANCE, f"default: {DEFAULT_RELATIVE_TOLERANCE:.0%} of the full model's score"


def within_band(score: float, full_score: float, tolerance: float, higher_is_better: bool) -> bool:
    return score >= full_score - tolerance if higher_is_better else score <= full_score + tolerance


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def matching_round(
    rows: Sequence[Mapping],
    metric: str,
    full_score: float | None,
    matching_tolerance: float | None = None,
    full_model_std: float | None = None,
    higher_is_better: bool | None = None,
) -> dict:
    """The matching round: the highest sparsity whose ``metric`` is within the tolerance of ``full_score``."""
    entry: dict[str, Any] = {"metric": metric, "full_score": full_score, "round": None, "sparsity": None}
    if not _is_number(full_score):
        entry["reason"] = f"no full-model score for {metric!r} (round 0 has not finished or did not report it)"
        return entry
    higher = greater_is_better(metric, higher_is_better)
    tolerance, source = resolve_tolerance(full_score, matching_tolerance, full_model_std)
    entry.update(tolerance=tolerance, tolerance_source=source, greater_is_better=higher)
    scored = [r for r in rows if _is_number(r.get(metric))]
    if not scored:
        entry["reason"] = f"no round reported {metric!r}; rounds report: {metric_keys(rows)}"
        return entry
    good = [r for r in scored if within_band(float(r[metric]), full_score, tolerance, higher)]
    entry["matching_rounds"] = [r["round"] for r in good]
    if good:
        best = max(good, key=lambda r: (r["sparsity"], r["round"]))
        entry.update(round=best["round"], sparsity=best["sparsity"], score=best[metric], ticket=best.get("ticket"))
    else:
        entry["reason"] = "no round is within the tolerance of the full model"
    return entry


def metric_keys(rows: Sequence[Mapping]) -> list[str]:
    """Every logged key of the rows besides the round bookkeeping, in first-seen order (the CSV's columns).

    These include Trainer statistics (runtimes, throughput, ``total_flos``); :func:`metric_names`
    picks the evaluation scores among them.
    """
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in (*LEADING_KEYS, *BOOKKEEPING_KEYS) and k not in keys]
    return keys


#: Trainer statistics that are logged beside the scores but measure the run, not the model.
_RUN_STATISTICS = {"epoch", "step", "seed", "total_flos", "runtime", "combined_score"}
_RUN_STATISTIC_SUFFIXES = ("_runtime", "_per_second", "_flos", "_mem_cpu_alloc_delta", "_mem_cpu_peaked_delta")
#: Prefixes the Trainer puts before a score (``metric_key_prefix``); ``train_`` values describe training.
_SCORE_PREFIXES = ("eval_", "test_", "predict_")


def is_metric(key: str, value: Any = 0.0) -> bool:
    """Whether a logged ``key: value`` is an evaluation score of the model (THE rule, used everywhere).

    Scores are finite numbers that are not round bookkeeping (``round``, ``sparsity``, train time,
    steps...), not training statistics (``train_loss``, ``train_runtime``, anything ``train_``), not
    Trainer run statistics (``epoch``, ``total_flos``, ``*_runtime``, ``*_per_second``) and not
    ``combined_score`` (the stock run_glue's mean of the other scores). ``eval_loss`` is a score.
    """
    if not _is_number(value) or key in (*LEADING_KEYS, *BOOKKEEPING_KEYS):
        return False
    if key.startswith("train_") or key.endswith(_RUN_STATISTIC_SUFFIXES):
        return False
    bare = next((key[len(p) :] for p in _SCORE_PREFIXES if key.startswith(p)), key)
    return bare not in _RUN_STATISTICS


def metric_names(rows: Sequence[Mapping]) -> list[str]:
    """The evaluation scores logged in ``rows`` (see :func:`is_metric`), in first-seen order."""
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in names and is_metric(k, v)]
    return names


def to_csv(rows: Sequence[Mapping]) -> str:
    columns = [*LEADING_KEYS, *metric_keys(rows), *TRAILING_KEYS]
    if any(k in r for r in rows for k in REFERENCE_KEYS):
        columns += list(REFERENCE_KEYS)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return out.getvalue()


def write_results(output_dir: str | Path, results: Mapping[str, Any]) -> None:
    """``results.json`` (everything) and ``results.csv`` (the rows), each written whole or not at all."""
    output_dir = Path(output_dir)
    atomic_write_json(output_dir / RESULTS_JSON, results)
    atomic_write_text(output_dir / RESULTS_CSV, to_csv(results.get("rounds", [])))


def read_json(path: str | Path) -> Any:
    """A JSON file the library wrote; a truncated or unreadable one is a TicketError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TicketError(f"{path}: unreadable ({err})") from err
