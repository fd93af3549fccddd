"""The bit-packed mask file format (safetensors: one uint8 tensor per weight, 8 flags a byte)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hf_tickets.core.atomic_files import atomic_write
from hf_tickets.core.errors import TicketError
from hf_tickets.core.selection import count_pruned

MASK_FORMAT = "hf_tickets.masks"
_FINGERPRINT_PREFIX = "__fingerprint__."


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.reshape(-1).numpy()))


def unpack_mask(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    numel = math.prod(shape)
    bits = np.unpackbits(packed.numpy(), count=numel).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


def save_packed_masks(path: Path, masks: dict[str, torch.Tensor], fingerprint: dict[str, torch.Tensor]) -> None:
    tensors = {name: pack_mask(mask) for name, mask in masks.items()}
    tensors.update({_FINGERPRINT_PREFIX + name: values.contiguous() for name, values in fingerprint.items()})
    # One metadata key: safetensors writes several in arbitrary order, and saves must be byte-identical.
    header = {
        "format": MASK_FORMAT,
        "shapes": {name: list(mask.shape) for name, mask in masks.items()},
        "pruned": {name: count_pruned(mask) for name, mask in masks.items()},
    }
    metadata = {MASK_FORMAT: json.dumps(header)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_packed_masks(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Masks and fingerprint from ``path``; every inconsistency is a ``TicketError`` naming the file."""
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise TicketError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    if MASK_FORMAT not in metadata:
        raise TicketError(f"{path} is not an hf_tickets mask file (no {MASK_FORMAT!r} metadata)")
    try:
        header = json.loads(metadata[MASK_FORMAT])
        shapes, pruned = header["shapes"], header["pruned"]
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise TicketError(f"{path} has damaged metadata: {err}") from err

    fingerprint = {
        name[len(_FINGERPRINT_PREFIX) :]: tensor
        for name, tensor in tensors.items()
        if name.startswith(_FINGERPRINT_PREFIX)
    }
    stray = [n for n in tensors if not n.startswith(_FINGERPRINT_PREFIX) and n not in shapes]
    if stray or set(shapes) != set(pruned):
        raise TicketError(f"{path}: tensors {stray[:3]} have no recorded shape; the file is corrupt")
    masks = {}
    for name, shape in shapes.items():  # the recorded order, which tie-breaking depends on
        packed = tensors.get(name)
        if packed is None:
            raise TicketError(f"{path} lacks the mask for {name!r}; the file is corrupt")
        if packed.dtype != torch.uint8 or packed.numel() != math.ceil(math.prod(shape) / 8):
            raise TicketError(f"{path}: packed mask {name!r} does not fit its shape {shape}; the file is corrupt")
        mask = unpack_mask(packed, shape)
        if count_pruned(mask) != pruned[name]:
            raise TicketError(f"{path}: mask {name!r} does not have its recorded pruned count; the file is corrupt")
        masks[name] = mask
    return masks, fingerprint
