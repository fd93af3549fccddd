"""What the finished rounds of an IMP run say: the matching round, whether a round left the band, ``results.json``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from hf_tickets.core.errors import TicketError
from hf_tickets.training.imp.run_state import METRICS_FILE, RunFolder
from hf_tickets.training.imp_config import IMPConfig
from hf_tickets.training.results import (
    greater_is_better,
    matching_round,
    metric_names,
    read_json,
    resolve_tolerance,
    within_band,
)

logger = logging.getLogger(__name__)


class RunSummary:
    """The records (``rows``) of the finished rounds of one run, round 0 first."""

    def __init__(self, config: IMPConfig, schedule: list[float], distributed: dict, reference: Path | None):
        self.config, self.schedule, self.distributed, self.reference = config, schedule, distributed, reference
        self.rows: list[dict] = []

    def full_score(self) -> float | None:
        """The full model's score: round 0's (random re-init: the reference IMP run's round 0)."""
        metric = self.config.matching_metric
        if self.reference is not None:  # random re-init's round 0 is not the pre-trained full model
            path = RunFolder(self.reference).round_dir(0) / METRICS_FILE
            return read_json(path).get(metric) if path.is_file() else None
        return self.rows[0].get(metric) if self.rows else None

    def matches(self, row: Mapping) -> bool:
        c, full = self.config, self.full_score()
        score = row.get(c.matching_metric)
        if full is None or score is None:
            raise TicketError(
                f"stop_when_not_matching needs {c.matching_metric!r} in the metrics of round 0 and of round "
                f"{row['round']}; round {row['round']} reported {metric_names([row])}"
            )
        tolerance, _ = resolve_tolerance(full, c.matching_tolerance, c.full_model_std)
        return within_band(score, full, tolerance, greater_is_better(c.matching_metric, c.matching_greater_is_better))

    def matching_round(self) -> dict:
        c = self.config
        return matching_round(
            self.rows,
            c.matching_metric,
            self.full_score(),
            c.matching_tolerance,
            c.full_model_std,
            c.matching_greater_is_better,
        )

    def results(self, complete: bool, stopped_reason: str | None) -> dict:
        """What ``results.json`` holds: config, processes, one row per finished round, the matching round."""
        full, full_std = self.full_score(), self.config.full_model_std
        return {
            "config": self.config.to_dict(),
            "schedule": self.schedule,
            "world_size": self.distributed["world_size"],
            "distributed": self.distributed,
            "rounds": [{**row, "full_score": full, "full_std": full_std} for row in self.rows],
            "matching": self.matching_round(),
            "complete": complete,
            "stopped_reason": stopped_reason,
            "early_bird_steps_saved": sum(row.get("early_bird_steps_saved") or 0 for row in self.rows),
        }

    def log_round(self, row: Mapping) -> None:
        names = metric_names([row])  # the one rule for which logged numbers are scores
        scores = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k in names and _is_number(v))
        eb = f", early-bird saved {row['early_bird_steps_saved']} steps" if row["early_bird_stopped"] else ""
        logger.info(
            "IMP round %d/%d | sparsity %.4f | %s | %d steps in %.1f s%s",
            row["round"],
            len(self.schedule) - 1,
            row["sparsity"],
            scores or "no metrics",
            row["train_steps"],
            row["train_time_s"],
            eb,
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
