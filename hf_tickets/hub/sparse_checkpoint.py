"""Pruned models on disk: a standard dense checkpoint, or a compact one (surviving values + bitmask).

The dense form is what ``model.save_pretrained`` writes (``model.safetensors`` + ``config.json``),
with the pruned weights stored as zeros, so plain ``AutoModel*.from_pretrained`` loads it.

The compact form (``model.compact.safetensors``) stores each tensor that is cheaper that way as
its surviving values (1-D, original dtype) plus a bit-packed keep-mask; every other tensor is stored
as it was. At 70% sparsity a float32 tensor takes 30% of its values + 1 bit per weight (~33%).
A weight counts as surviving when any bit of it is set, so ``-0.0`` survives and expanding restores
every tensor bit for bit; the dense file's own metadata is kept too, so the expanded file is
byte-identical to one written by safetensors (as ``save_pretrained`` does). ``from_pretrained``
cannot read the compact form by design: ``hf-tickets convert SRC DST --to dense`` expands it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hf_tickets.core.atomic_files import atomic_write
from hf_tickets.core.errors import TicketError
from hf_tickets.core.ticket import MASKS_FILE, Ticket
from hf_tickets.core.ticket_files import pack_mask, unpack_mask

logger = logging.getLogger(__name__)

DENSE_FILE = "model.safetensors"
COMPACT_FILE = "model.compact.safetensors"
COMPACT_SUFFIX = ".compact.safetensors"
COMPACT_FORMAT = "hf_tickets.compact"
COMPACT_FORMAT_VERSION = "1"
VALUES_SUFFIX, MASK_SUFFIX = "::values", "::mask"
#: Compacting a tensor adds a header entry (~150 bytes); smaller savings are not worth it.
MIN_SAVING_BYTES = 256
_NOTE = (
    "Compact sparse checkpoint written by hf_tickets: surviving values + bitmask per tensor. "
    "Not loadable by transformers' from_pretrained by design; expand it with "
    "`hf-tickets convert SRC DST --to dense`."
)


def surviving(tensor: torch.Tensor) -> torch.Tensor:
    """Flat bool mask of the entries with any bit set (so ``-0.0`` survives and restores exactly)."""
    flat = tensor.detach().reshape(-1).contiguous()
    return flat.view(torch.uint8).reshape(flat.numel(), flat.element_size()).ne(0).any(dim=1)


def is_compact(path: str | Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == COMPACT_FORMAT
    except (SafetensorError, OSError):
        return False


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = load_file(path)
        with safe_open(str(path), framework="pt") as f:
            return tensors, f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise TicketError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err


def compact_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Tensors of the compact file and the dense shapes of the compacted ones."""
    out: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, tensor in tensors.items():
        if name.endswith((VALUES_SUFFIX, MASK_SUFFIX)):
            raise TicketError(f"tensor name {name!r} collides with the compact format's own suffixes")
        keep = surviving(tensor)
        itemsize, numel = tensor.element_size(), tensor.numel()
        compact_bytes = int(keep.sum()) * itemsize + math.ceil(numel / 8)
        if numel * itemsize - compact_bytes < MIN_SAVING_BYTES:
            out[name] = tensor
            continue
        out[name + VALUES_SUFFIX] = tensor.reshape(-1)[keep].contiguous()
        out[name + MASK_SUFFIX] = pack_mask(keep)
        shapes[name] = list(tensor.shape)
    return out, shapes


def expand_tensors(
    tensors: dict[str, torch.Tensor], shapes: dict[str, list[int]], source: str = ""
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`compact_tensors`; ``source`` names the file in errors."""
    dense = {name: t for name, t in tensors.items() if not name.endswith((VALUES_SUFFIX, MASK_SUFFIX))}
    for name, shape in shapes.items():
        values, packed = tensors.get(name + VALUES_SUFFIX), tensors.get(name + MASK_SUFFIX)
        if values is None or packed is None or packed.numel() != math.ceil(math.prod(shape) / 8):
            raise TicketError(f"{source}: the values or mask of {name!r} are missing or damaged")
        keep = unpack_mask(packed, [math.prod(shape)])
        if int(keep.sum()) != values.numel():
            raise TicketError(f"{source}: {name!r} has {values.numel()} values for {int(keep.sum())} kept weights")
        flat = torch.zeros(math.prod(shape), dtype=values.dtype)  # all-zero bits: what pruning left
        flat[keep] = values
        dense[name] = flat.reshape(shape)
    return dense


def to_compact(src: str | Path, dst: str | Path) -> Path:
    """Write the compact form of the dense safetensors file ``src`` to ``dst``."""
    src = Path(src)
    tensors, metadata = _read(src)
    if metadata.get("format") == COMPACT_FORMAT:
        raise TicketError(f"{src} is already a compact checkpoint")
    out, shapes = compact_tensors(tensors)
    compact_metadata = {
        "format": COMPACT_FORMAT,
        "format_version": COMPACT_FORMAT_VERSION,
        "note": _NOTE,
        "shapes": json.dumps(shapes),
        "dense_metadata": json.dumps(metadata),
    }
    return atomic_write(dst, lambda tmp: save_file(out, tmp, metadata=compact_metadata))


def to_dense(src: str | Path, dst: str | Path) -> Path:
    """Expand the compact file ``src`` into a standard safetensors file at ``dst``."""
    src = Path(src)
    tensors, metadata = _read(src)
    if metadata.get("format") != COMPACT_FORMAT:
        raise TicketError(f"{src} is not a compact hf_tickets checkpoint (format={metadata.get('format')!r})")
    if metadata.get("format_version") != COMPACT_FORMAT_VERSION:
        raise TicketError(f"{src} has compact format version {metadata.get('format_version')!r}; upgrade hf_tickets")
    try:
        shapes, dense_metadata = json.loads(metadata["shapes"]), json.loads(metadata["dense_metadata"])
    except (KeyError, json.JSONDecodeError) as err:
        raise TicketError(f"{src} has damaged metadata: {err}") from err
    dense = expand_tensors(tensors, shapes, source=str(src))
    return atomic_write(dst, lambda tmp: save_file(dense, tmp, metadata=dense_metadata))


def _weight_files(directory: Path, to: str) -> list[Path]:
    """The weight files of a checkpoint directory that converting ``to`` a form would change."""
    files = [p for p in sorted(directory.glob("*.safetensors")) if p.name != MASKS_FILE]
    compact = [p for p in files if p.name.endswith(COMPACT_SUFFIX)]
    return compact if to == "dense" else [p for p in files if p not in compact]


def _converted_name(name: str, to: str) -> str:
    if to == "dense":
        return name[: -len(COMPACT_SUFFIX)] + ".safetensors"
    return name[: -len(".safetensors")] + COMPACT_SUFFIX


def convert(src: str | Path, dst: str | Path, to: str, *, keep_source: bool = True) -> list[Path]:
    """Convert a file, or every weight file of a checkpoint directory, ``to`` ``"dense"`` or ``"compact"``.

    For a directory, ``dst`` is a directory that receives the converted weights and a copy of the
    other files (config, ticket, card), so it is a complete checkpoint. ``keep_source=False`` removes
    the converted sources (useful when ``dst`` is ``src``). Returns the files written.
    """
    if to not in ("dense", "compact"):
        raise TicketError(f"convert to 'dense' or 'compact', not {to!r}")
    write = to_dense if to == "dense" else to_compact
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        if not src.is_file():
            raise TicketError(f"{src} does not exist")
        target = dst / _converted_name(src.name, to) if dst.is_dir() else dst
        written = [write(src, target)]
        if not keep_source and target.resolve() != src.resolve():
            src.unlink()
        return written
    sources = _weight_files(src, to)
    if not sources:
        raise TicketError(f"{src} holds no {'compact' if to == 'dense' else 'dense'} safetensors weights to convert")
    dst.mkdir(parents=True, exist_ok=True)
    if dst.resolve() != src.resolve():
        for other in src.iterdir():
            if other.is_file() and other not in sources and not other.name.startswith("."):
                shutil.copy2(other, dst / other.name)
    written = [write(path, dst / _converted_name(path.name, to)) for path in sources]
    if not keep_source:
        for path in sources:
            path.unlink()
    return written


def save_sparse_checkpoint(
    model, ticket: Ticket, directory: str | Path, *, compact: bool = False, tokenizer=None
) -> Path:
    """Zero ``ticket``'s pruned weights in ``model`` (in place) and save model + ticket (+ ``tokenizer``).

    The model may be fine-tuned, so its weights are not checked against the ticket's base
    (shapes and names still are). With ``compact=True`` the weights are stored only in the compact form.
    ``tokenizer`` (anything with ``save_pretrained``: a tokenizer or processor) makes the directory a
    complete model folder; without one, a warning says so unless the directory already holds one.
    """
    directory = Path(directory)
    ticket.apply(model, verify_base=False)
    model.save_pretrained(directory)
    ticket.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    elif not (directory / "tokenizer_config.json").is_file():
        logger.warning(
            "%s has no tokenizer: pass tokenizer= to save_sparse_checkpoint, else AutoTokenizer and pipeline() "
            "cannot use it (and hf-tickets push refuses it)",
            directory,
        )
    if compact:
        convert(directory, directory, "compact", keep_source=False)
    return directory
