"""The bit-packed mask file format (safetensors: one uint8 tensor per weight, 8 flags a byte).

Reading checks everything a damaged or crafted file could get wrong (header, shapes, counts,
fingerprint sizes) and reports it as a ``TicketError`` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from hf_tickets.core.errors import TicketError
from hf_tickets.core.selection import count_pruned

MASK_FORMAT = "hf_tickets.masks"
FINGERPRINT_PREFIX = "__fingerprint__."
#: Weights at a few fixed positions per tensor identify the base model cheaply.
FINGERPRINT_POSITIONS = 32
#: No real weight matrix comes near this; a larger claim is a damaged or crafted file.
MAX_MASK_NUMEL = 2**36


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.reshape(-1).numpy()))


def unpack_mask(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    numel = math.prod(shape)
    bits = np.unpackbits(packed.numpy(), count=numel).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


def fingerprint_size(numel: int) -> int:
    return min(FINGERPRINT_POSITIONS, numel)


def write_packed_masks(path: str | Path, masks: dict[str, torch.Tensor], fingerprint: dict[str, torch.Tensor]) -> None:
    """Write the mask file to ``path`` (not atomically: the ticket commits it together with its config)."""
    tensors = {name: pack_mask(mask) for name, mask in masks.items()}
    tensors.update({FINGERPRINT_PREFIX + name: values.contiguous() for name, values in fingerprint.items()})
    # One metadata key: safetensors writes several in arbitrary order, and saves must be byte-identical.
    header = {
        "format": MASK_FORMAT,
        "shapes": {name: list(mask.shape) for name, mask in masks.items()},
        "pruned": {name: count_pruned(mask) for name, mask in masks.items()},
    }
    save_file(tensors, str(path), metadata={MASK_FORMAT: json.dumps(header)})


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _metadata(data: bytes, source: str) -> dict:
    """The ``__metadata__`` of a safetensors byte string, read without trusting it."""
    if len(data) < 8:
        raise TicketError(f"{source} is truncated or corrupt: {len(data)} bytes is not a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise TicketError(
            f"{source} is truncated or corrupt: its header claims {size} bytes, the file has {len(data) - 8}"
        )
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, RecursionError) as err:
        raise TicketError(f"{source} has a damaged safetensors header: {err}") from err
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or MASK_FORMAT not in metadata:
        raise TicketError(f"{source} is not an hf_tickets mask file (no {MASK_FORMAT!r} metadata)")
    try:
        info = json.loads(metadata[MASK_FORMAT])
    except (TypeError, ValueError, RecursionError) as err:
        raise TicketError(f"{source}: metadata field {MASK_FORMAT!r} is not JSON: {err}") from err
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("shapes"), dict)
        or not isinstance(info.get("pruned"), dict)
    ):
        raise TicketError(f"{source}: metadata field {MASK_FORMAT!r} lacks the 'shapes' and 'pruned' tables")
    return info


def _check_shape(name, shape, source: str) -> list[int]:
    if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(is_count(d) for d in shape):
        raise TicketError(f"{source}: field shapes[{name!r}] = {shape!r} is not a list of sizes")
    if math.prod(shape) > MAX_MASK_NUMEL:
        raise TicketError(f"{source}: field shapes[{name!r}] = {shape} claims more than {MAX_MASK_NUMEL} weights")
    return shape


def read_packed_masks(data: bytes, source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Masks and fingerprint from the bytes of a mask file; ``source`` names the file in errors."""
    info = _metadata(data, source)
    shapes, pruned = info["shapes"], info["pruned"]
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError) as err:
        raise TicketError(f"{source} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    if set(shapes) != set(pruned):
        raise TicketError(f"{source}: fields 'shapes' and 'pruned' name different tensors; the file is corrupt")
    stray = [n for n in tensors if n not in shapes and n.removeprefix(FINGERPRINT_PREFIX) not in shapes]
    if stray:
        raise TicketError(f"{source}: tensors {stray[:3]} belong to no recorded mask; the file is corrupt")
    masks = {}
    for name, shape in shapes.items():  # the recorded order, which tie-breaking depends on
        shape = _check_shape(name, shape, source)
        packed = tensors.get(name)
        if packed is None:
            raise TicketError(f"{source} lacks the mask for {name!r}; the file is corrupt")
        if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != math.ceil(math.prod(shape) / 8):
            raise TicketError(f"{source}: packed mask {name!r} does not fit its shape {shape}; the file is corrupt")
        mask = unpack_mask(packed, shape)
        if not is_count(pruned[name]) or count_pruned(mask) != pruned[name]:
            raise TicketError(f"{source}: field pruned[{name!r}] = {pruned[name]!r} does not match the mask")
        masks[name] = mask
    fingerprint = {}
    for key, values in tensors.items():
        if not key.startswith(FINGERPRINT_PREFIX):
            continue
        name = key[len(FINGERPRINT_PREFIX) :]
        if not values.is_floating_point() or values.shape != (fingerprint_size(masks[name].numel()),):
            raise TicketError(
                f"{source}: fingerprint {key!r} has shape {tuple(values.shape)} and dtype {values.dtype}, expected "
                f"({fingerprint_size(masks[name].numel())},) floats; the file is corrupt"
            )
        fingerprint[name] = values.float()
    return masks, fingerprint


def load_packed_masks(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Masks and fingerprint from the file at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TicketError(f"{path} cannot be read: {err}") from err
    return read_packed_masks(data, str(path))
