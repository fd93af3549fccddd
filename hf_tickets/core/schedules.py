"""Sparsity schedules of iterative magnitude pruning: the sparsity each IMP round trains at.

Round 0 always trains the full model (sparsity 0): its score is what a *matching* ticket is
compared with, and pruning starts from its trained weights. Two ways to go on from there:

- ``prune_fraction=p``: every round prunes ``p`` of the weights still remaining (the paper's
  Algorithm 1), so round ``r`` has sparsity ``1 - (1 - p)**r``: 0.1, 0.19, 0.271, ... for p = 0.1.
  Rounds continue until ``target_sparsity``; the last round prunes just up to it (never beyond).
- an explicit ``sparsity_schedule`` such as ``"0.1,0.2,...,0.9"`` (what the paper's code does:
  10% of the *original* weights per round), used as given.

``imp_rounds`` (pruning rounds after round 0) caps either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hf_tickets.core.errors import TicketError

#: Sparsities closer than this count as equal (float noise of 1 - (1 - p)**r).
EPS = 1e-9


def parse_sparsities(value: str | Sequence[float] | None) -> list[float] | None:
    """``"0.1,0.2"`` / ``"0.1 0.2"`` / ``[0.1, 0.2]`` -> ``[0.1, 0.2]``, checked: strictly increasing, each in "
    "(0, 1)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        items = [item for item in value.replace(",", " ").split() if item]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise TicketError(f"sparsity_schedule must be a string like '0.1,0.2,0.3' or a list of numbers, got {value!r}")
    sparsities = []
    for item in items:
        try:
            number = float(item)
        except (TypeError, ValueError):
            raise TicketError(f"sparsity_schedule: {item!r} is not a number") from None
        if isinstance(item, bool) or math.isnan(number) or not 0.0 < number < 1.0:
            raise TicketError(f"sparsity_schedule: every sparsity must be in (0, 1), got {item!r}")
        sparsities.append(number)
    if not sparsities:
        raise TicketError("sparsity_schedule is empty")
    for before, after in zip(sparsities, sparsities[1:]):
        if after <= before + EPS:
            raise TicketError(
                f"sparsity_schedule must increase strictly (pruning only adds), got {before} then {after}"
            )
    return sparsities


def imp_schedule(
    prune_fraction: float = 0.1,
    target_sparsity: float = 0.9,
    imp_rounds: int | None = None,
    sparsity_schedule: str | Sequence[float] | None = None,
) -> list[float]:
    """Sparsity of every round, round 0 (0.0, the full model) first."""
    if imp_rounds is not None and (isinstance(imp_rounds, bool) or not isinstance(imp_rounds, int) or imp_rounds < 0):
        raise TicketError(
            f"imp_rounds must be a whole number >= 0 (pruning rounds after the full model), got {imp_rounds!r}"
        )
    explicit = parse_sparsities(sparsity_schedule)
    if explicit is not None:
        if imp_rounds is not None and imp_rounds > len(explicit):
            raise TicketError(f"imp_rounds={imp_rounds} but sparsity_schedule has only {len(explicit)} sparsities")
        return [0.0] + explicit[: len(explicit) if imp_rounds is None else imp_rounds]

    if (
        isinstance(prune_fraction, bool)
        or not isinstance(prune_fraction, (int, float))
        or not 0.0 < prune_fraction < 1.0
    ):
        raise TicketError(
            "prune_fraction must be in (0, 1) (the share of remaining weights each round prunes), got "
            f"{prune_fraction!r}"
        )
    if (
        isinstance(target_sparsity, bool)
        or not isinstance(target_sparsity, (int, float))
        or not 0.0 < target_sparsity < 1.0
    ):
        raise TicketError(f"target_sparsity must be in (0, 1), got {target_sparsity!r}")
    schedule = [0.0]
    while schedule[-1] < target_sparsity - EPS and (imp_rounds is None or len(schedule) <= imp_rounds):
        r = len(schedule)
        schedule.append(min(1.0 - (1.0 - prune_fraction) ** r, float(target_sparsity)))
    return schedule
