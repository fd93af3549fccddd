"""Sharded weights: score on the full weight, mask the shard each rank holds.

FSDP2 DTensors go through ``full_tensor()``, DeepSpeed ZeRO-3 parameters through
``GatheredParameters`` (deepspeed is imported lazily, only when a ZeRO-3 parameter is met).
Gathering is collective: every rank must make the same calls in the same order. In one process
every helper is the identity and costs no copy, so the core calls them unconditionally.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from hf_tickets.core.errors import TicketError
from hf_tickets.core.targets import unwrap_model


def is_dtensor(p: torch.Tensor) -> bool:
    """A DTensor, as FSDP2 (``fully_shard``) and tensor parallelism make parameters into.

    Importing ``torch.distributed.tensor`` takes ~0.5 s; no DTensor can exist before it is
    imported, so it is only looked up, never imported, here.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(p, module.DTensor)


def is_zero3(p: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 parameter: ``p.data`` is empty, each rank holds a flat slice in ``p.ds_tensor``."""
    return hasattr(p, "ds_tensor") and hasattr(p, "ds_shape")


def full_shape(p: torch.Tensor) -> torch.Size:
    """The parameter's logical shape, also when this rank holds only a piece of it."""
    return torch.Size(p.ds_shape) if is_zero3(p) else p.shape


def full_weight(p: torch.Tensor) -> torch.Tensor:
    """The whole weight, detached. Plain tensors come back as they are (no copy).

    For sharded parameters this is a collective: every rank must call it, for the same
    parameters in the same order. The result is a new tensor; writing to it changes nothing.
    """
    if is_dtensor(p):
        return p.detach().full_tensor()
    if is_zero3(p):
        import deepspeed  # only reached when deepspeed made this parameter

        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            return p.data.detach().clone()
    return p.detach()


def local_view(p: torch.Tensor) -> torch.Tensor:
    """The tensor this rank stores for ``p``: writing to it (under ``no_grad``) changes the parameter.

    DTensor: its local shard; ZeRO-3: the flat, padded partition; plain tensors: themselves.
    """
    if is_dtensor(p):
        return p.to_local()
    if is_zero3(p):
        return p.ds_tensor
    return p


def local_mask(mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The part of the full ``mask`` that lines up with ``local_view(p)``, on its device.

    DTensor: chunked exactly as ``p`` (``src_data_rank=None``: every rank cuts its own piece from
    its own copy of the mask, no communication; masks are identical on all ranks). ZeRO-3: this
    rank's slice of the flattened mask, padded with True (keep) like DeepSpeed pads the partition.
    """
    if is_dtensor(p):
        from torch.distributed.tensor import distribute_tensor

        local = distribute_tensor(mask.to(p.device_mesh.device_type), p.device_mesh, p.placements, src_data_rank=None)
        return local.to_local().to(p.to_local().device)
    if is_zero3(p):
        partition = p.ds_tensor
        size = partition.ds_numel if hasattr(partition, "ds_numel") else partition.numel()
        start = size * dist.get_rank(group=p.ds_process_group)
        piece = mask.reshape(-1)[start : start + size]
        if piece.numel() < size:
            piece = torch.cat([piece, torch.ones(size - piece.numel(), dtype=torch.bool)])
        return piece.to(partition.device)
    return mask.to(p.device)


def zero_pruned_(p: torch.Tensor, mask: torch.Tensor) -> None:
    """Set the weights of ``p`` that the full keep-``mask`` prunes to zero, on this rank's shard.

    Call under ``torch.no_grad()``. No communication. Under ZeRO-3 every copy this rank keeps is
    zeroed: the partition, the full weight while it is gathered (small "persistent" parameters
    stay gathered all the time), and the optimizer's fp32 master partition, which DeepSpeed
    copies over the partition after every step.
    """
    keep = local_mask(mask, p)
    local_view(p).masked_fill_(~keep, 0)
    if is_zero3(p) and p.data.numel() == mask.numel():
        p.data.masked_fill_(~mask.to(p.data.device).reshape(p.data.shape), 0)
    if is_zero3(p) and getattr(p, "_z3_optimizer", None) is not None and p.requires_grad:
        from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

        master = safe_get_local_fp32_param(p)
        safe_set_local_fp32_param(p, master.masked_fill(~keep.to(master.device), 0))


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every tensor whole, on CPU: what ``save_pretrained(state_dict=...)`` writes.

    Same keys as ``state_dict()`` (tied weights under each name, no non-persistent buffers).
    Collective when the model is sharded (every rank must call it); only the main process should
    save the result. Tensors of a plain model on CPU are returned as they are, NOT copied: clone
    them to keep a snapshot that training must not change.
    """
    model = unwrap_model(model)
    # The Parameter objects themselves: ZeRO-3's state_dict() holds empty stand-ins without ds_* attributes.
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return {name: full_weight(tensors[name]).cpu() for name in model.state_dict()}


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Copy full (unsharded) tensors, e.g. θ0 from ``full_state_dict``, into ``model``: each rank into its shard.

    The counterpart of ``full_state_dict`` for rewinding a sharded model; ``load_state_dict`` for a
    plain one. No communication: every rank must hold the same ``state``. ``strict``: its keys
    must be exactly ``model.state_dict()``'s (else tensors it lacks are left alone).
    """
    model = unwrap_model(model)
    if strict:
        expected = model.state_dict().keys()
        missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
        if missing or unexpected:
            raise TicketError(f"state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, tensor in [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False),
        ]:
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(full_shape(tensor)):
                raise TicketError(
                    f"{name}: the state has shape {tuple(value.shape)}, the model {tuple(full_shape(tensor))}"
                )
            if is_dtensor(tensor):
                from torch.distributed.tensor import distribute_tensor

                piece = distribute_tensor(
                    value.to(tensor.device_mesh.device_type), tensor.device_mesh, tensor.placements, src_data_rank=None
                ).to_local()
                tensor.to_local().copy_(piece)
            elif is_zero3(tensor):
                _load_zero3(tensor, value)
            else:
                tensor.copy_(value)


def _load_zero3(p: torch.Tensor, value: torch.Tensor) -> None:
    """This rank's slice of ``value`` into every copy DeepSpeed keeps of ``p`` (see ``zero_pruned_``)."""
    partition = p.ds_tensor
    size = partition.ds_numel if hasattr(partition, "ds_numel") else partition.numel()
    start = size * dist.get_rank(group=p.ds_process_group)
    piece = torch.zeros(size, dtype=partition.dtype)
    flat = value.reshape(-1)[start : start + size]
    piece[: flat.numel()] = flat
    partition.copy_(piece)
    if p.data.numel() == value.numel():  # gathered (persistent) parameter
        p.data.copy_(value.reshape(p.data.shape))
    if getattr(p, "_z3_optimizer", None) is not None and p.requires_grad:
        from deepspeed.utils import safe_set_local_fp32_param

        safe_set_local_fp32_param(p, piece.float())
