"""Keeping a ticket's pruned weights exactly zero during training: the one implementation.

``TicketCallback`` (Trainer) and ``IMPManager`` (plain loop and Trainer) both use ``Masking``:

- a uint8 keep-mask (1 byte/weight) per parameter, for the tensor this rank stores (the whole
  weight, or its FSDP2 shard), on its device: ``mul_`` by it is ~15x faster than ``masked_fill_``
  with a bool mask on CPU (see benchmarks/bench_callback.py), and ``x * 0`` is exactly (+/-) 0;
- gradient hooks that zero the pruned weights' gradients as they are accumulated, so gradient
  clipping and a logged ``grad_norm`` see only the sub-network (as with the paper's
  ``weight_orig * mask`` parametrisation). Sharded parameters get their gradients from
  FSDP/DeepSpeed, not from autograd accumulation, so only whole ones are hooked;
- ``zero_()`` after every optimizer step, which also zeroes DeepSpeed ZeRO-3's gathered copy and
  fp32 master partition (``core.shards.zero_pruned_``): DeepSpeed copies the master over the
  partition at every step, so a master left alone would revive pruned weights.
"""

from __future__ import annotations

import torch
from torch import nn

from hf_tickets.core.shards import is_dtensor, is_zero3, local_mask, local_view, zero_pruned_
from hf_tickets.core.ticket import Ticket


class Masking:
    """Keeps ``ticket``'s pruned weights of ``model`` zero; ``remove()`` detaches the gradient hooks."""

    def __init__(self, ticket: Ticket, model: nn.Module, mask_gradients: bool = True):
        self.ticket = ticket
        self._keep: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._zero3: list[tuple[nn.Parameter, torch.Tensor]] = []  # (parameter, full keep-mask)
        for name, p in ticket.parameters_of(model).items():
            if is_zero3(p):
                self._zero3.append((p, ticket.masks[name]))
            else:
                self._keep.append((p, local_mask(ticket.masks[name], p).to(torch.uint8)))
        self._hooks = []
        if mask_gradients and ticket.num_pruned:
            self._hooks = [
                p.register_post_accumulate_grad_hook(_grad_masker(keep)) for p, keep in self._keep if not is_dtensor(p)
            ]

    def zero_(self) -> None:
        """Re-zero the pruned weights on this rank's shard (no communication); call after every optimizer step."""
        if not self.ticket.num_pruned:
            return
        with torch.no_grad():
            for param, keep in self._keep:
                local_view(param).mul_(keep)
            for param, mask in self._zero3:
                zero_pruned_(param, mask)

    def measured_sparsity(self) -> float:
        """Share of the target weights that is exactly zero now, on the shard this rank holds."""
        tensors = [local_view(p) for p, _ in self._keep + self._zero3]
        with torch.no_grad():
            nonzero = sum(int(torch.count_nonzero(t)) for t in tensors)
        total = sum(t.numel() for t in tensors)
        return (total - nonzero) / total  # same expression as Ticket.sparsity: equal when enforced

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def _grad_masker(keep: torch.Tensor):
    def hook(param: torch.Tensor) -> None:
        param.grad.mul_(keep)  # after each backward has accumulated into .grad

    return hook
