"""Data-driven unit scores: each head's and FFN neuron's importance on batches (Michel et al. 2019).

``I_u = Σ_batches |∂L/∂ξ_u|`` with ``ξ_u`` a gate multiplying unit ``u``'s output (Michel et al. 2019;
Prasanna et al. 2020): the first-order Taylor estimate of how much the loss changes when ``u`` is removed.
No gate is added: a unit's output ``a_u`` reaches the rest of the model only through its columns of
its output matrix (``attention.output.dense`` for a head, ``output.dense`` for a neuron), so with
``y = Σ_u ξ_u W[:, u] a_u + b`` and ``G = ∂L/∂W = Σ_tokens (∂L/∂y) a^T``, at ``ξ = 1``
``∂L/∂ξ_u = Σ_tokens Σ_i (∂L/∂y)_i W[i, u] a_u = Σ W[:, u] ⊙ G[:, u]`` (summed over the unit's
columns; the bias is not gated). Pruned weights are zero, so they add nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from hf_tickets.core.errors import TicketError
from hf_tickets.core.shards import is_dtensor, is_zero3
from hf_tickets.core.structured import num_heads_of, units_of
from hf_tickets.core.targets import TargetSpec, base_model_of, resolve_targets, unwrap_model

Loss = Callable[[nn.Module, Mapping], torch.Tensor]


def model_loss(model: nn.Module, batch: Mapping) -> torch.Tensor:
    """The loss the model computes from a batch holding its labels (``model(**batch).loss``)."""
    loss = model(**batch).loss
    if loss is None:
        raise TicketError("the model returned no loss: importance batches must hold the labels")
    return loss


def unit_importance(
    model: nn.Module,
    batches: Iterable[Mapping],
    targets: TargetSpec = "auto",
    kinds: tuple[str, ...] = ("head", "neuron"),
    num_heads: int | None = None,
    loss: Loss = model_loss,
) -> dict[str, torch.Tensor]:
    """``prune(..., scores=)`` for the structured strategies: every target weight gets its unit's importance.

    One forward and backward pass per batch (dicts of tensors, moved to the model's device), in eval
    mode (no dropout: the model as it is, as Michel et al. score the fine-tuned model); the model's
    ``.grad`` and train/eval modes are left as they were. A unit's ``I_u`` is spread evenly over its
    weights (``I_u / size`` each, CPU float32), so a structured strategy's per-unit mean ranks by it;
    targets in no unit score 0. Every process computes its own; ``prune`` keeps the main process's.
    Sharded (FSDP, ZeRO-3) parameters are refused: their gradients are pieces.
    """
    module = unwrap_model(model)  # no DDP forward: its hooks would expect a training step
    base = base_model_of(module)
    params = {name: base.get_parameter(name) for name in resolve_targets(module, targets)}
    sharded = [name for name, p in params.items() if is_dtensor(p) or is_zero3(p)]
    if sharded:
        raise TicketError(
            f"importance scores need whole gradients; {sharded[0]} is sharded (FSDP/ZeRO-3), which is not supported"
        )
    if "head" in kinds and num_heads is None:
        num_heads = num_heads_of(module)  # as prune() does for a head strategy
    # Per layer and kind: its units and the matrix whose columns (dim 1) carry their outputs.
    groups = []
    for layer_units in units_of(params, kinds, num_heads):
        for kind in dict.fromkeys(u.kind for u in layer_units):
            units = [u for u in layer_units if u.kind == kind]
            output = next(name for name, dim, _, _ in units[0].slices if dim == 1)
            groups.append((units, output))
    outputs = list(dict.fromkeys(output for _, output in groups))
    totals = [torch.zeros(len(units), dtype=torch.float64) for units, _ in groups]
    device = next(module.parameters()).device
    seen = 0
    with _scoring(module, [params[name] for name in outputs]):
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            # autograd.grad leaves .grad alone and runs no gradient-accumulation hooks (DDP's reducer).
            grads = torch.autograd.grad(loss(module, batch), [params[name] for name in outputs])
            columns = {
                name: (params[name].detach() * g).sum(dim=0, dtype=torch.float64).cpu()
                for name, g in zip(outputs, grads)
            }
            for total, (units, output) in zip(totals, groups):
                total += columns[output].reshape(len(units), -1).sum(dim=1).abs()  # |∂L/∂ξ_u| of this batch
            seen += 1
    if not seen:
        raise TicketError("unit_importance got no batches")
    scores = {name: torch.zeros(p.shape, dtype=torch.float32) for name, p in params.items()}
    for total, (units, _) in zip(totals, groups):
        for unit, value in zip(units, total.tolist()):
            for view in unit.views(scores):
                view.fill_(value / unit.size)
    return scores


@contextlib.contextmanager
def _scoring(module: nn.Module, needed: list[nn.Parameter]):
    """Eval mode and gradients for ``needed``; every module's mode and ``requires_grad`` restored afterwards."""
    modes = {m: m.training for m in module.modules()}
    frozen = [p for p in needed if not p.requires_grad]
    module.eval()
    for p in frozen:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p in frozen:
            p.requires_grad_(False)
        for m, training in modes.items():
            m.training = training
