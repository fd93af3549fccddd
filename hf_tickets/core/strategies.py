"""Pruning strategies: pure functions ``(weights, keep, sparsity, **options) -> keep-masks``.

``weights`` maps names to tensors, ``keep`` is the previous mask (None for a dense model; what
it pruned stays pruned) and ``sparsity`` is the overall fraction to have pruned afterwards.
Every strategy prunes exactly ``round(sparsity * n)`` of the ``n`` weights.

Early bird compares the masks a strategy would produce at two moments of one round with the
strategy's ``mask_distance`` attribute if it has one (whole-unit strategies count units,
``hf_tickets.core.structured.unit_distance``), else :func:`weight_distance`.
"""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Callable, Mapping

import torch

from hf_tickets.core.errors import TicketError
from hf_tickets.core.selection import as_scores, count_pruned, prune_lowest

Masks = dict[str, torch.Tensor]
Strategy = Callable[..., Masks]

STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    def register(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return register


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise TicketError(f"unknown pruning strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}") from None


def check_strategy_options(name: str, options: Mapping[str, object]) -> None:
    """Refuse options ``name``'s strategy does not take, or of another type than its default."""
    parameters = dict(
        list(inspect.signature(get_strategy(name)).parameters.items())[3:]
    )  # after weights, keep, sparsity
    for option, value in options.items():
        if option not in parameters:
            accepted = ", ".join(parameters) or "none"
            raise TicketError(f"pruning strategy {name!r} takes no option {option!r} (its options: {accepted})")
        default = parameters[option].default
        if default is not inspect.Parameter.empty and not _same_kind(value, default):
            raise TicketError(
                f"option {option!r} of pruning strategy {name!r} must be {type(default).__name__}, got {value!r}"
            )


def _same_kind(value: object, default: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return isinstance(value, int) if isinstance(default, int) else isinstance(value, (int, float))
    return default is None or isinstance(value, type(default))


def decision_distance(changed: int, new_in_previous: int, new_in_current: int) -> float:
    """The share of a round's pruning decisions two candidate masks disagree on, in [0, 1].

    ``changed``: items (weights or units) pruned by exactly one of them; ``new_in_*``: items each prunes
    that the round's ticket did not. What the ticket pruned before is the same in both, so it is no
    decision; 0 when neither prunes anything new.
    """
    decided = new_in_previous + new_in_current
    return changed / decided if decided else 0.0


def weight_distance(previous: Masks, current: Masks, keep: Masks | None) -> float:
    """Early bird's distance between two candidate keep-masks of a round whose ticket is ``keep``, in weights.

    ``|A Δ B| / (|A| + |B|)`` over the weights each prunes anew: the share of the weights to prune that changed
    (both prune as many, so it is also 1 - the overlap of the two pruned sets).
    """
    before = 0 if keep is None else sum(count_pruned(m) for m in keep.values())
    changed = sum(int(torch.count_nonzero(m ^ current[n])) for n, m in previous.items())
    new_previous = sum(count_pruned(m) for m in previous.values()) - before
    new_current = sum(count_pruned(m) for m in current.values()) - before
    return decision_distance(changed, new_previous, new_current)


def mask_distance_of(strategy: Strategy) -> Callable[..., float]:
    """How early bird compares two of ``strategy``'s masks: its own ``mask_distance``, else in weights."""
    return getattr(strategy, "mask_distance", weight_distance)


def num_to_prune(weights: Mapping[str, torch.Tensor], sparsity: float) -> int:
    return round(sparsity * sum(w.numel() for w in weights.values()))


@register_strategy("global_magnitude")
def global_magnitude(weights: Mapping[str, torch.Tensor], keep: Masks | None, sparsity: float) -> Masks:
    """The paper's rule: the lowest magnitudes across all target matrices together."""
    return prune_lowest(weights, num_to_prune(weights, sparsity), keep)


def _layer_quotas(weights, keep, sparsity) -> dict[str, int]:
    """How many more weights each tensor prunes so every tensor nears ``sparsity`` and the total is exact.

    Each tensor's wish is what it lacks to reach ``sparsity``; wishes are scaled to the exact
    total and rounded by largest remainder, never beyond what the tensor still has.
    """
    pruned = {n: 0 if keep is None else count_pruned(keep[n]) for n in weights}
    need = num_to_prune(weights, sparsity) - sum(pruned.values())
    wish = {n: max(0.0, sparsity * w.numel() - pruned[n]) for n, w in weights.items()}
    scale = need / sum(wish.values()) if sum(wish.values()) > 0 else 0.0
    quota = {n: min(math.floor(wish[n] * scale), weights[n].numel() - pruned[n]) for n in weights}
    by_remainder = sorted(weights, key=lambda n: (quota[n] - wish[n] * scale, list(weights).index(n)))
    short = need - sum(quota.values())
    for n in by_remainder * 2:
        if short <= 0:
            break
        if quota[n] < weights[n].numel() - pruned[n]:
            quota[n] += 1
            short -= 1
    return {n: pruned[n] + quota[n] for n in weights}


@register_strategy("layerwise_magnitude")
def layerwise_magnitude(weights: Mapping[str, torch.Tensor], keep: Masks | None, sparsity: float) -> Masks:
    """Lowest magnitudes within each matrix, every matrix pruned to (nearly) the same sparsity."""
    quotas = _layer_quotas(weights, keep, sparsity)
    masks = {}
    for name, weight in weights.items():
        layer_keep = None if keep is None else {name: keep[name]}
        masks.update(prune_lowest({name: weight}, quotas[name], layer_keep))
    return masks


@register_strategy("random")
def random_pruning(weights: Mapping[str, torch.Tensor], keep: Masks | None, sparsity: float, seed: int = 0) -> Masks:
    """The paper's random-pruning baseline: a uniformly random subset, reproducible from ``seed``."""
    scores = {}
    for name, weight in weights.items():
        # Per-tensor streams, so a tensor's scores do not depend on which other tensors are targeted.
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        scores[name] = torch.rand(weight.shape, generator=generator)
    return prune_lowest(scores, num_to_prune(weights, sparsity), keep, score_fn=as_scores)
