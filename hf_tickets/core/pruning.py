"""``prune(model, sparsity)``: the one call that turns a model into a ticket."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from hf_tickets.core.collectives import broadcast_object, masks_from_main
from hf_tickets.core.errors import TicketError
from hf_tickets.core.provenance import base_model_origin
from hf_tickets.core.shards import full_shape, full_weight
from hf_tickets.core.strategies import check_strategy_options, get_strategy, mask_distance_of, num_to_prune
from hf_tickets.core.structured import num_heads_of
from hf_tickets.core.targets import TargetSpec, base_model_of, resolve_targets, unwrap_model
from hf_tickets.core.ticket import Ticket, TicketConfig


def check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or math.isnan(sparsity):
        raise TicketError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise TicketError(f"sparsity must be in [0, 1), got {sparsity}")
    return float(sparsity)


def prune(
    model: nn.Module,
    sparsity: float,
    strategy: str = "global_magnitude",
    targets: TargetSpec = "auto",
    ticket: Ticket | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    **strategy_options,
) -> Ticket:
    """A new ticket pruning exactly ``round(sparsity * n)`` of the ``n`` target weights of ``model``.

    With ``ticket=`` pruning is cumulative (an IMP round): what ``ticket`` pruned stays pruned,
    its targets are used, and ``sparsity`` is the overall fraction afterwards.
    ``strategy_options`` go to the strategy (e.g. ``seed=`` for ``"random"``).

    ``scores``: one non-negative tensor per target weight (same name and full shape), ranked by the
    strategy in place of the weights: ``global_magnitude`` prunes the lowest scores, the structured
    strategies rank units by their mean score (e.g. ``hf_tickets.training.importance.unit_importance``).

    Under ``torch.distributed`` call it on every rank: sharded weights are gathered whole for
    scoring (a collective), the masks are computed on the main process and every rank gets them
    (with ``scores=``, the main process's scores decide; nothing is gathered).
    """
    sparsity = check_sparsity(sparsity)
    strategy_fn = get_strategy(strategy)
    if getattr(strategy_fn, "needs_num_heads", False) and "num_heads" not in strategy_options:
        strategy_options["num_heads"] = num_heads_of(model)  # head strategies (core.structured) split by head
    check_strategy_options(strategy, strategy_options)
    if ticket is not None:
        params = ticket.parameters_of(model)
        keep = ticket.masks
        weights = _ranked_values(params, scores)
        # Whole-unit strategies round to units, so a ticket may lie above the sparsity of the next round; they check.
        if num_to_prune(weights, sparsity) < ticket.num_pruned and not getattr(strategy_fn, "whole_units", False):
            raise TicketError(
                f"sparsity {sparsity} is below the ticket's {ticket.sparsity:.4f}: pruning only adds to a ticket"
            )
        targets = ticket.config.targets
    else:
        base = base_model_of(model)
        params = {name: base.get_parameter(name) for name in resolve_targets(model, targets)}
        weights = _ranked_values(params, scores)
        keep = None
    masks = masks_from_main(lambda: strategy_fn(weights, keep, sparsity, **strategy_options))
    # Scores belong to the ticket they were measured on, not to the sparser one made from it.
    provenance = {k: v for k, v in ticket.config.provenance.items() if k != "metrics"} if ticket is not None else {}
    config = TicketConfig(
        targets=targets if isinstance(targets, str) else list(targets), strategy=strategy, provenance=provenance
    )
    new_ticket = Ticket(masks, config)
    if ticket is not None and ticket.fingerprint:
        new_ticket.fingerprint = ticket.fingerprint  # the base stays the base across IMP rounds
        for key in ("base_model", "base_model_revision", "base_model_prefix", "model_type"):
            setattr(new_ticket.config, key, getattr(ticket.config, key))
    else:
        new_ticket.record_base(model)
        # Like the masks, the main process's record of the base is the one every rank keeps.
        new_ticket.fingerprint = broadcast_object(new_ticket.fingerprint)
        # The Hub id and commit the weights came from (also for a local snapshot of the cache), never a local path.
        config = getattr(unwrap_model(model), "config", None)
        origin = broadcast_object(
            base_model_origin(config, new_ticket.fingerprint, new_ticket.config.base_model_prefix)
        )
        new_ticket.config.base_model, new_ticket.config.base_model_revision = origin.repo_id, origin.revision
    return new_ticket


def _ranked_values(params: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor] | None) -> dict:
    """What the strategy ranks, in target order: the full weights (a collective when sharded) or the checked scores."""
    if scores is None:
        return {name: full_weight(p) for name, p in params.items()}
    if not isinstance(scores, Mapping):
        raise TicketError(f"scores must map target weight names to tensors, got {type(scores).__name__}")
    unknown = [name for name in scores if name not in params]
    if unknown:
        raise TicketError(
            f"scores hold {unknown[0]!r}, which is not a target weight (targets look like {next(iter(params))!r}: "
            "names relative to the base model)"
        )
    ranked = {}
    for name, p in params.items():
        score = scores.get(name)
        if score is None:
            raise TicketError(f"scores lack target weight {name!r}: give one score per target weight")
        if not isinstance(score, torch.Tensor) or score.shape != full_shape(p):
            shape = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise TicketError(f"scores[{name!r}] must be a tensor of shape {tuple(full_shape(p))}, got {shape}")
        score = score.detach()
        if not score.is_floating_point() or not bool(torch.isfinite(score).all()) or bool((score < 0).any()):
            raise TicketError(f"scores[{name!r}] must be finite non-negative floats (the strategies rank by |value|)")
        ranked[name] = score
    return ranked


def mask_distance(model: nn.Module, strategy: str, previous: Ticket, current: Ticket, ticket: Ticket) -> float:
    """Early bird's distance between two tickets ``strategy`` made from ``ticket`` at two moments of a round.

    In [0, 1]: the share of the round's pruning decisions that changed, counted in the strategy's own
    terms (weights; heads and neurons for the structured strategies). ``model`` only supplies the head count.
    """
    strategy_fn = get_strategy(strategy)
    options = {"num_heads": num_heads_of(model)} if getattr(strategy_fn, "needs_num_heads", False) else {}
    return mask_distance_of(strategy_fn)(previous.masks, current.masks, ticket.masks, **options)
