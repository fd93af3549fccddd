"""A ticket directory on disk: the bit-packed mask file and how it is committed with its config.

``ticket_masks.safetensors`` holds one uint8 tensor per weight (8 flags a byte), the dense shapes and
pruned counts in its metadata, and the base-model fingerprint. Reading checks everything a damaged or
crafted file could get wrong (header, shapes, counts, fingerprint sizes) and reports it as a
``TicketError`` naming the file and the field.

``ticket_config.json`` records the SHA-256 of the masks file (``masks_sha256``). A save writes the
masks to a temporary, publishes the new config as ``.ticket_config.json.pending``, renames the masks
into place, then the config. A load takes the config whose checksum matches the masks it read:
``ticket_config.json``, or the pending one of a save killed between the two renames. So a load sees
the old ticket or the new one, never one's masks beside the other's config.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from hf_tickets.core.atomic_files import (
    atomic_write_json,
    commit,
    discard,
    remove_stale_temporaries,
    sha256_of,
    write_temporary,
)
from hf_tickets.core.errors import TicketError
from hf_tickets.core.selection import count_pruned

MASKS_FILE = "ticket_masks.safetensors"
CONFIG_FILE = "ticket_config.json"
#: The next config, complete, while a save renames its files into place (hidden: never pushed).
PENDING_CONFIG_FILE = ".ticket_config.json.pending"
#: A load beside a live save may see both files replaced between its two reads; it reads again.
READ_ATTEMPTS = 3
SHA256_RE = re.compile(r"[0-9a-f]{64}")
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


def save_ticket_files(
    directory: Path,
    masks: dict[str, torch.Tensor],
    fingerprint: dict[str, torch.Tensor],
    config_for: Callable[[str], dict[str, Any]],
) -> None:
    """Commit the masks file and the config ``config_for(masks_sha256)`` together into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory, (MASKS_FILE, CONFIG_FILE, PENDING_CONFIG_FILE))
    masks_tmp = write_temporary(directory / MASKS_FILE, lambda tmp: write_packed_masks(tmp, masks, fingerprint))
    try:
        # From here a loader finds the new config beside whichever masks file is in place.
        atomic_write_json(directory / PENDING_CONFIG_FILE, config_for(sha256_of(masks_tmp.read_bytes())))
        commit(masks_tmp, directory / MASKS_FILE)
    except BaseException:
        discard(masks_tmp)
        raise
    commit(directory / PENDING_CONFIG_FILE, directory / CONFIG_FILE)


class _ChecksumMismatch(TicketError):
    pass


def read_ticket_files(
    directory: Path, trust_pending: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Any, Path]:
    """Masks, fingerprint, the raw JSON of the config saved with them, and that config's path.

    A config without ``masks_sha256`` (ticket format 1) is returned as is; the caller decides.
    ``trust_pending=False`` ignores a pending config (only a local save leaves one).
    """
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return _read_once(directory, trust_pending)
        except _ChecksumMismatch:
            continue  # a save running meanwhile may have replaced both files between our two reads
    return _read_once(directory, trust_pending)


def _read_once(directory: Path, trust_pending: bool):
    masks_path = directory / MASKS_FILE
    if not masks_path.is_file():
        raise TicketError(f"{directory} is not a ticket: {MASKS_FILE} is missing")
    try:
        masks_bytes = masks_path.read_bytes()  # read once: checksum and masks come from the same bytes
    except OSError as err:
        raise TicketError(f"{masks_path} cannot be read: {err}") from err
    masks, fingerprint = read_packed_masks(masks_bytes, str(masks_path))
    data, config_path = _matching_config(directory, sha256_of(masks_bytes), trust_pending)
    return masks, fingerprint, data, config_path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TicketError(f"{path} is not valid ticket JSON: {err}") from err


def _matching_config(directory: Path, masks_sha256: str, trust_pending: bool) -> tuple[Any, Path]:
    config_path, pending_path = directory / CONFIG_FILE, directory / PENDING_CONFIG_FILE
    if trust_pending and pending_path.is_file():
        try:
            pending = _read_json(pending_path)
        except TicketError:
            pending = None  # a pending config is written atomically; unreadable means it is not ours
        if isinstance(pending, dict) and pending.get("masks_sha256") == masks_sha256:
            return pending, pending_path
    if not config_path.is_file():
        raise TicketError(f"{directory} is not a ticket: {CONFIG_FILE} is missing")
    data = _read_json(config_path)
    recorded = data.get("masks_sha256") if isinstance(data, dict) else None
    # A recorded value that is no digest at all is a malformed field, reported as such by the caller.
    if isinstance(recorded, str) and SHA256_RE.fullmatch(recorded) and recorded != masks_sha256:
        raise _ChecksumMismatch(
            f"{directory / MASKS_FILE} does not match field 'masks_sha256' of {config_path}: the masks file is "
            "damaged or comes from another save"
        )
    return data, config_path
