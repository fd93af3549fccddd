"""Structured strategies: whole attention heads and whole FFN neurons, in the strategy registry.

A *unit* is a group of weights that only make sense together:

- head ``h`` of a layer: rows ``h*d:(h+1)*d`` of ``attention.self.{query,key,value}.weight`` and the
  same columns of ``attention.output.dense.weight`` (``d`` = rows / ``num_heads``);
- FFN neuron ``j`` of a layer: row ``j`` of ``intermediate.dense.weight`` and column ``j`` of
  ``output.dense.weight``.

Zeroing a unit's weights removes its contribution exactly (its output columns are zero whatever its
biases give), so a masked structured ticket computes what the physically smaller model computes
(``hf_tickets.core.shrink``). A unit's score is the mean magnitude of its weights (L1 / count) divided
by the mean of that over the live units of its kind in the targets, so heads and neurons compete by how
weak they are among their peers (not by the scale of attention vs FFN weights); ties go to the earlier
unit (layer order, then index).

**What ``sparsity`` means.** As for every ticket, sparsity is the fraction of the *target* weights
that is pruned (measured, in ``Ticket.sparsity``). A structured strategy prunes whole units, so it
prunes units, lowest score first, while that brings the pruned count closer to ``round(sparsity * n)``
(a unit that would overshoot by at least what it gains is skipped with the rest of its kind in its
layer; ties: the fewer units). For units of one size
``u`` that is ``round_half_down(needed / u)`` more units. Targets that belong to no unit (with
``targets="auto"``, the FFN matrices for a head strategy) count in ``n`` and stay dense, so a head
strategy on the default targets reaches at most ~1/3 sparsity; ``targets=HEAD_TARGETS`` makes
sparsity the fraction of heads, ``targets=NEURON_TARGETS`` the fraction of neurons. Every layer
keeps at least one head and one neuron (a layer without heads cannot run); asking for more raises.

Pruning is cumulative (``keep``): a fully pruned unit stays pruned and counts towards the total.
The layerwise strategies prune the same number of units in every layer: they prune one unit per layer
at a time (each layer's lowest), so the count is a multiple of the number of layers, chosen by the
same nearest rule; ``shrink`` turns that into a uniform model with a stock config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hf_tickets.core.errors import TicketError
from hf_tickets.core.strategies import Masks, decision_distance, num_to_prune, register_strategy
from hf_tickets.core.targets import unwrap_model

#: ``targets=`` for head strategies: sparsity is then the fraction of heads pruned.
HEAD_TARGETS = r".*\.attention\.(self\.(query|key|value)|output\.dense)"
#: ``targets=`` for neuron strategies: sparsity is then the fraction of FFN neurons pruned.
NEURON_TARGETS = r".*\.layer\.\d+\.(intermediate|output)\.dense"

HEAD_PARTS = (
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.value.weight",
    "attention.output.dense.weight",
)
NEURON_PARTS = ("intermediate.dense.weight", "output.dense.weight")
_LAYER_NAME = re.compile(r"^(?P<layer>(.*\.)?layer\.\d+)\.(?P<part>.+)$")


@dataclass(frozen=True)
class Unit:
    """One head or neuron: ``slices`` are (tensor name, dim, start, stop) of the weights it owns."""

    kind: str  # "head" or "neuron"
    layer: str  # e.g. "encoder.layer.3"
    index: int
    slices: tuple[tuple[str, int, int, int], ...]
    size: int  # weights it owns

    def views(self, tensors: Mapping[str, torch.Tensor]) -> Iterable[torch.Tensor]:
        for name, dim, start, stop in self.slices:
            yield tensors[name].narrow(dim, start, stop - start)


def layer_parts(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{layer: {part: full name}}`` for the BERT-style layer tensors among ``names``."""
    layers: dict[str, dict[str, str]] = {}
    for name in names:
        match = _LAYER_NAME.match(name)
        if match and match["part"] in HEAD_PARTS + NEURON_PARTS:
            layers.setdefault(match["layer"], {})[match["part"]] = name
    return layers


def units_of(
    weights: Mapping[str, torch.Tensor], kinds: tuple[str, ...], num_heads: int | None = None
) -> list[list[Unit]]:
    """Per layer (in target order), its units of the given kinds; checks the tensors are all there."""
    layers = layer_parts(weights)
    result = []
    for layer, parts in layers.items():
        units: list[Unit] = []
        for kind, wanted in (("head", HEAD_PARTS), ("neuron", NEURON_PARTS)):
            if kind not in kinds or not parts.keys() & set(wanted):
                continue
            missing = [p for p in wanted if p not in parts]
            if missing:
                raise TicketError(
                    f"{kind} pruning needs all of {layer}.{{{', '.join(wanted)}}} among the targets; "
                    f"missing: {', '.join(missing)}"
                )
            names = [parts[p] for p in wanted]
            if kind == "head":
                units += _head_units(layer, names, weights, num_heads)
            else:
                units += _neuron_units(layer, names, weights)
        if units:
            result.append(units)
    if not result:
        raise TicketError(
            f"no {' or '.join(kinds)} among the targets (tensors like {next(iter(weights), '?')!r}); "
            f"structured strategies need BERT-style layers: targets={HEAD_TARGETS!r} or {NEURON_TARGETS!r}"
        )
    return result


def _dims(kind: str) -> tuple[int, ...]:
    return (0, 0, 0, 1) if kind == "head" else (0, 1)


def _make_unit(kind, layer, index, pieces, weights) -> Unit:
    size = sum((stop - start) * weights[name].shape[1 - dim] for name, dim, start, stop in pieces)
    return Unit(kind, layer, index, tuple(pieces), size)


def _head_units(layer, names, weights, num_heads) -> list[Unit]:
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
        raise TicketError(
            f"head pruning needs num_heads= (a whole number >= 1), got {num_heads!r}; "
            "prune() passes the model's config.num_attention_heads"
        )
    query, key, value, out = names
    rows = weights[query].shape[0]
    if rows % num_heads or any(weights[n].shape[0] != rows for n in (key, value)) or weights[out].shape[1] != rows:
        raise TicketError(
            f"{layer}: attention shapes {[tuple(weights[n].shape) for n in names]} do not split into "
            f"num_heads={num_heads} heads"
        )
    d = rows // num_heads
    return [
        _make_unit("head", layer, h, [(n, dim, h * d, (h + 1) * d) for n, dim in zip(names, _dims("head"))], weights)
        for h in range(num_heads)
    ]


def _neuron_units(layer, names, weights) -> list[Unit]:
    intermediate, output = names
    width = weights[intermediate].shape[0]
    if weights[output].shape[1] != width:
        raise TicketError(
            f"{layer}: {intermediate} has {width} rows but {output} has {weights[output].shape[1]} columns"
        )
    return [
        _make_unit("neuron", layer, j, [(intermediate, 0, j, j + 1), (output, 1, j, j + 1)], weights)
        for j in range(width)
    ]


# ------------------------------------------------------------------ scoring and selection
def group_sums(units: list[Unit], tensors: Mapping[str, torch.Tensor], absolute: bool = True) -> torch.Tensor:
    """Per unit, the sum of (|x| or x) over its slices: one reduction per tensor, not one per unit.

    ``units`` are one layer's units of one kind, which tile each tensor's dimension in index order.
    """
    total = torch.zeros(len(units), dtype=torch.float64)
    for name, dim, _, _ in units[0].slices:
        tensor = tensors[name].detach()
        values = tensor.abs() if absolute else tensor
        lines = values.sum(dim=1 - dim, dtype=torch.float64)  # one value per row (dim 0) or column (dim 1)
        total += lines.reshape(len(units), -1).sum(dim=1)
    return total


def _candidates(units: list[Unit], weights, keep) -> tuple[list[tuple[float, int, Unit, int]], int]:
    """A layer's units of one kind still alive as (score, index, unit, alive weights), and how many are pruned."""
    scores = (group_sums(units, weights) / units[0].size).tolist()
    alive = [units[0].size] * len(units) if keep is None else group_sums(units, keep, absolute=False).long().tolist()
    live = [(scores[i], unit.index, unit, alive[i]) for i, unit in enumerate(units) if alive[i] > 0]
    return live, len(units) - len(live)


def _ranked_queues(weights, keep, layers: list[list[Unit]]):
    """Per (layer position, kind): candidates as (score, index, unit, alive), the lowest score LAST (popped
    first), and how many units are already pruned. Each layer's highest-scoring unit is never a candidate.
    """
    live, done = {}, {}
    for position, units in enumerate(layers):
        for kind in dict.fromkeys(u.kind for u in units):
            group = (position, kind)
            live[group], done[group] = _candidates([u for u in units if u.kind == kind], weights, keep)
            if not live[group]:
                raise TicketError(f"{units[0].layer} has no {kind} left: every layer keeps one")
    # Heads and neurons compete by how weak they are among their own kind: each score is divided by its
    # kind's mean, so the split does not follow the scale of attention vs FFN weights.
    kind_mean = {}
    for kind in {g[1] for g in live}:
        scores = [item[0] for g, items in live.items() if g[1] == kind for item in items]
        kind_mean[kind] = sum(scores) / len(scores) or 1.0
    queues = {}
    for group, items in live.items():
        items = sorted(((score / kind_mean[group[1]], *rest) for score, *rest in items), key=lambda i: (i[0], i[1]))
        queues[group] = items[:-1][::-1]
    return queues, done


def _prune_units(weights, keep, sparsity, layers: list[list[Unit]], layerwise: bool) -> Masks:
    masks = {n: torch.ones(w.shape, dtype=torch.bool) if keep is None else keep[n].clone() for n, w in weights.items()}
    target = num_to_prune(weights, sparsity)
    pruned = sum(int((~m).sum()) for m in masks.values())
    queues, done = _ranked_queues(weights, keep, layers)
    biggest = max(u.size for units in layers for u in units)
    if 2 * (pruned - target) > biggest:  # within half a unit is the rounding of an earlier round: prune nothing
        raise TicketError(
            f"sparsity {sparsity} is below the ticket's {pruned / sum(w.numel() for w in weights.values()):.4f}: "
            "pruning only adds to a ticket"
        )
    while pruned < target:
        picks = _next_row(queues, done) if layerwise else _next_group(queues)
        if not picks:
            break
        gain = sum(queues[group][-1][3] for group in picks)
        if 2 * (target - pruned) <= gain:  # it would overshoot by at least what it gains
            if layerwise:
                break
            # So would the rest of its group (same size), but a smaller kind of unit may still come closer.
            queues[picks[0]] = []
            continue
        for group in picks:
            _, _, unit, _ = queues[group].pop()
            done[group] += 1
            for view in unit.views(masks):
                view.fill_(False)
        pruned += gain
    # The stop rule leaves at most half a step (a unit; layerwise, a unit in every layer); more means no units left.
    if 2 * (target - pruned) > (biggest * len(queues) if layerwise else biggest):
        reachable = pruned / sum(w.numel() for w in weights.values())
        in_units = {name for units in layers for unit in units for name, *_ in unit.slices}
        outside = sorted(set(weights) - in_units)
        hint = (
            f"; {len(outside)} target tensors belong to no unit and stay dense (e.g. {outside[0]}): narrow the "
            f"targets to the units' matrices (HEAD_TARGETS or NEURON_TARGETS in hf_tickets.core.structured)"
            if outside
            else ""
        )
        raise TicketError(
            f"sparsity {sparsity} is out of reach of structured pruning on these targets: at most {reachable:.4f} "
            f"(every layer keeps one unit of each kind{hint}). Lower the sparsity"
            + (" or narrow the targets" if outside else "")
        )
    return masks


def _next_group(queues) -> list:
    """Global: the group holding the lowest score anywhere (ties: the earlier layer)."""
    open_groups = [g for g, q in queues.items() if q]
    return [min(open_groups, key=lambda g: (queues[g][-1][0], g))] if open_groups else []


def _next_row(queues, done) -> list:
    """Layerwise: one more unit in every layer at the lowest level, so levels stay equal; none if one has no more."""
    level = min(done.values())
    row = [g for g in queues if done[g] == level]
    return row if all(queues[g] for g in row) else []


# --------------------------------------------------------------------------- early bird
def _pruned_units(masks: Mapping[str, torch.Tensor], layers: list[list[Unit]]) -> torch.Tensor:
    """One flag per unit (layer order, then kind, then index): True = every weight of it is pruned."""
    flags = []
    for units in layers:
        for kind in dict.fromkeys(u.kind for u in units):
            flags.append(group_sums([u for u in units if u.kind == kind], masks, absolute=False) == 0)
    return torch.cat(flags)


def unit_distance(
    previous: Masks, current: Masks, keep: Masks | None, kinds: tuple[str, ...], num_heads: int | None = None
) -> float:
    """EarlyBERT's early-bird distance (Chen et al. 2021): the head/neuron masks compared unit by unit.

    The Hamming distance between the two masks' pruned units (a head and a neuron count one each,
    whatever their sizes), over the units each prunes anew (not ``keep``'s): the share of the units to
    prune that changed, as :func:`hf_tickets.core.strategies.weight_distance` is for weights. Pure.
    """
    layers = units_of(current, kinds, num_heads)
    was = torch.zeros(sum(len(units) for units in layers), dtype=torch.bool)
    if keep is not None:
        was = _pruned_units(keep, layers)
    before, after = _pruned_units(previous, layers), _pruned_units(current, layers)
    changed = int((before ^ after).sum())
    return decision_distance(changed, int((before & ~was).sum()), int((after & ~was).sum()))


# ---------------------------------------------------------------------------- strategies
def _structured(kinds: tuple[str, ...], layerwise: bool):
    def strategy(weights: Mapping[str, torch.Tensor], keep: Masks | None, sparsity: float, num_heads=None) -> Masks:
        return _prune_units(weights, keep, sparsity, units_of(weights, kinds, num_heads), layerwise)

    def mask_distance(previous: Masks, current: Masks, keep: Masks | None, num_heads=None) -> float:
        return unit_distance(previous, current, keep, kinds, num_heads)

    strategy.needs_num_heads = "head" in kinds  # prune() then passes model.config.num_attention_heads
    strategy.whole_units = True  # prune() lets it judge a sparsity a little below the ticket's (rounding)
    strategy.mask_distance = mask_distance  # early bird counts changed units, not weights (EarlyBERT)
    return strategy


STRUCTURED_STRATEGIES = {
    "heads": (("head",), False),
    "layerwise_heads": (("head",), True),
    "neurons": (("neuron",), False),
    "layerwise_neurons": (("neuron",), True),
    "heads+neurons": (("head", "neuron"), False),
}
for _name, (_kinds, _layerwise) in STRUCTURED_STRATEGIES.items():
    register_strategy(_name)(_structured(_kinds, _layerwise))

#: What a ticket prunes as a whole, by name: the recipes' ``--ticket_granularity``.
GRANULARITIES = ("weights", "heads", "neurons", "heads+neurons")


def granularity_of(strategy: str) -> str:
    """``"weights"`` for an unstructured strategy, else the units it prunes: ``"heads"``, ``"neurons"`` or both."""
    kinds = STRUCTURED_STRATEGIES.get(strategy, ((),))[0]
    return "+".join(f"{kind}s" for kind in kinds) or "weights"


def num_heads_of(model: nn.Module) -> int:
    """The model's attention heads per layer, from its config (BERT, RoBERTa, ELECTRA: num_attention_heads)."""
    config = getattr(unwrap_model(model), "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if not isinstance(heads, int):
        raise TicketError(
            f"{type(unwrap_model(model)).__name__} has no config.num_attention_heads; pass num_heads= to prune()"
        )
    return heads
