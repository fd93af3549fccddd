"""``IMPRound``: one round of an IMP run, as the training loop sees it, and its early-bird check.

The round knows what it trains (``ticket``, ``sparsity``, where it saves) and counts optimizer
steps; what happens at its end (pruning, saving), how the next mask would look and how far two such
masks lie apart (for early-bird) belong to the manager, which hands them in as functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from hf_tickets.core.ticket import Ticket
from hf_tickets.training.imp.run_state import CHECKPOINT_DIR
from hf_tickets.training.imp_config import IMPConfig
from hf_tickets.training.masking import Masking

logger = logging.getLogger(__name__)


class IMPRound:
    """One round: ``ticket`` (what is trained), ``sparsity``, ``output_dir``, ``checkpoint_dir``, early-bird state.

    ``masking`` keeps the ticket's pruned weights zero (``masking.zero_()`` after each optimizer step).
    """

    def __init__(
        self,
        index: int,
        ticket: Ticket,
        next_sparsity: float | None,
        output_dir: Path,
        config: IMPConfig,
        masking: Masking,
        planned_steps: int | None,
        on_finish: Callable[..., None],
        on_rewind_step: Callable[[], None],
        candidate_ticket: Callable[[IMPRound], Ticket],
        mask_distance: Callable[[IMPRound, Ticket, Ticket], float],
    ):
        self.index, self.ticket, self.sparsity = index, ticket, ticket.sparsity
        self.next_sparsity = next_sparsity
        self.output_dir, self.checkpoint_dir = output_dir, output_dir / CHECKPOINT_DIR
        self.config, self.masking = config, masking
        self.planned_steps, self.steps = planned_steps, 0
        self.should_stop = False  # early-bird says: stop training this round
        self.early_bird_distances: list[tuple[int, float]] = []
        self.finished = False
        self.started_at = time.perf_counter()
        self._on_finish, self._on_rewind_step, self._candidate_ticket = on_finish, on_rewind_step, candidate_ticket
        self._mask_distance = mask_distance
        self._early_bird_last: Ticket | None = None
        # The mask of the weights the round starts from, and the first check's distance to it: early bird's
        # premise is that training shapes the mask; near 0 here, the mask was there before training.
        self._early_bird_start: Ticket | None = None
        self.early_bird_start_distance: float | None = None

    @property
    def is_last(self) -> bool:
        return self.next_sparsity is None

    def finish(
        self,
        metrics: Mapping[str, Any],
        train_steps: int | None = None,
        planned_steps: int | None = None,
        train_time_s: float | None = None,
        batches: Iterable[Mapping] | None = None,
    ) -> None:
        """Record ``metrics``, prune to the next sparsity and save the round (metrics.json last).

        ``batches``: with ``unit_score="importance"``, training batches (dicts of tensors with labels; the first
        ``importance_batches`` are used) on which the trained model's heads and neurons are scored. Pass the same
        ones in every run (e.g. a loader seeded with ``imp_seed``), so a rerun prunes the same units.
        """
        self._on_finish(self, dict(metrics), train_steps, planned_steps, train_time_s, batches)

    def begin(self) -> None:
        """Before the first step: the mask pruning would give from the starting weights, for early bird."""
        if self.config.early_bird and not self.is_last:
            self._early_bird_start = self._candidate_ticket(self)

    def step_completed(self, step: int) -> bool:
        """Optimizer step ``step`` is done: capture θ_i, run early-bird checks. True = stop the round."""
        self.steps = step
        config = self.config
        if self.index == 0 and config.rewind == "step" and step == config.rewind_steps:
            self._on_rewind_step()
        if config.early_bird and not self.is_last and not self.should_stop and step % config.early_bird_interval == 0:
            self._early_bird_check(step)
        return self.should_stop

    def _early_bird_check(self, step: int) -> None:
        """Stop once the mask pruning would give now has changed little over the last checks (You et al. 2020).

        The distance is the strategy's: the share of the weights to prune that changed, or of the heads and
        neurons for a structured strategy (EarlyBERT, Chen et al. 2021).
        """
        config = self.config
        candidate = self._candidate_ticket(self)
        if self._early_bird_start is not None:
            self._compare_with_start(step, candidate)
        if self._early_bird_last is not None:
            distance = self._mask_distance(self, self._early_bird_last, candidate)
            self.early_bird_distances.append((step, distance))
            recent = [d for _, d in self.early_bird_distances[-config.early_bird_patience :]]
            if len(recent) == config.early_bird_patience and max(recent) < config.early_bird_threshold:
                self.should_stop = True
                logger.info(
                    "IMP round %d: early-bird mask settled at step %d (changes %s)",
                    self.index,
                    step,
                    ", ".join(f"{d:.3f}" for d in recent),
                )
        self._early_bird_last = candidate

    def _compare_with_start(self, step: int, candidate: Ticket) -> None:
        """Warn when the first check's mask is already that of the starting weights (measured on MiniLM/SST-2:
        fine-tuning moved MiniLM's weights by 1.6% in a round, so the magnitude mask barely changes in a round)."""
        distance = self._mask_distance(self, self._early_bird_start, candidate)
        self.early_bird_start_distance, self._early_bird_start = distance, None
        if distance < self.config.early_bird_threshold:
            logger.warning(
                "IMP round %d: at step %d the mask early bird watches differs from the mask of the round's starting "
                "weights by only %.3f (threshold %g): it was there before training (fine-tuning a pre-trained "
                "model barely moves its weights), so early bird is likely to stop at its first possible check, and "
                "that stop says nothing about the task. See docs/training.md, 'Early bird when fine-tuning'.",
                self.index,
                step,
                distance,
                self.config.early_bird_threshold,
            )
