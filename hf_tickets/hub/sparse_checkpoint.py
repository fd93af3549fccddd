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
from hf_tickets.core.ticket_files import is_count, pack_mask, unpack_mask

logger = logging.getLogger(__name__)

logger = logging.getLogger(__name__)

DENSE_FILE = "model.safetensors"
COMPACT_FILE = "model.compact.safetensors"
COMPACT_SUFFIX = ".compact.safetensors"
COMPACT_FORMAT = "hf_tickets.compact"
COMPACT_FORMAT_VERSION = "1"
VALUES_SUFFIX, MASK_SUFFIX = "::values", "::mask"
MODEL_CONFIG_FILE = "config.json"
#: The most a compact file may expand to: bert-large in float64 is 2.7 GB.
MAX_DENSE_BYTES = 8 * 1024**3
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


def _checked_shapes(shapes, source: str) -> dict[str, list[int]]:
    if not isinstance(shapes, dict):
        raise TicketError(f"{source}: metadata field 'shapes' must be a JSON object, not {type(shapes).__name__}")
    for name, shape in shapes.items():
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(is_count(d) for d in shape):
            raise TicketError(f"{source}: metadata field shapes[{name!r}] = {shape!r} is not a list of sizes")
    return shapes


def check_expansion(
    tensors: dict[str, torch.Tensor],
    shapes: dict[str, list[int]],
    source: str,
    *,
    expected: dict[str, tuple[int, ...]] | None = None,
    max_dense_bytes: int = MAX_DENSE_BYTES,
) -> None:
    """Refuse, before anything is allocated, a compact file whose expansion is malformed or too large.

    Every ``::values``/``::mask`` tensor must belong to a compacted tensor (nothing is dropped), no name
    may be both, and with ``expected`` (the model's tensor shapes, from its ``config.json``) every
    tensor must be one of the model's with its shape. The dense file may not exceed ``max_dense_bytes``.
    """
    shapes = _checked_shapes(shapes, source)
    plain = {name for name in tensors if not name.endswith((VALUES_SUFFIX, MASK_SUFFIX))}
    parts = {name.removesuffix(VALUES_SUFFIX).removesuffix(MASK_SUFFIX) for name in tensors if name not in plain}
    if parts - set(shapes):
        raise TicketError(f"{source}: tensors {sorted(parts - set(shapes))[:3]} have no recorded shape in 'shapes'")
    if plain & set(shapes):
        raise TicketError(f"{source}: {sorted(plain & set(shapes))[:3]} are stored both dense and compact")
    total = 0
    for name, shape in shapes.items():
        values, packed = tensors.get(name + VALUES_SUFFIX), tensors.get(name + MASK_SUFFIX)
        if values is None or packed is None or values.dim() != 1 or packed.dtype != torch.uint8:
            raise TicketError(f"{source}: the values or mask of {name!r} are missing or damaged")
        if packed.dim() != 1 or packed.numel() != math.ceil(math.prod(shape) / 8):
            raise TicketError(f"{source}: the mask of {name!r} does not fit its recorded shape {shape}")
        total += math.prod(shape) * values.element_size()
    total += sum(tensors[name].numel() * tensors[name].element_size() for name in plain)
    if expected is not None:
        for name in sorted(plain | set(shapes)):
            shape = tuple(shapes[name]) if name in shapes else tuple(tensors[name].shape)
            if name not in expected:
                raise TicketError(f"{source}: tensor {name!r} is not a tensor of the model its config.json describes")
            if shape != tuple(expected[name]):
                raise TicketError(
                    f"{source}: tensor {name!r} claims shape {list(shape)}, the model in config.json has "
                    f"{list(expected[name])}"
                )
    if total > max_dense_bytes:
        raise TicketError(
            f"{source}: expanding would write {total:,} bytes, more than the limit of {max_dense_bytes:,} "
            "(pass max_dense_bytes= to allow more)"
        )


def expand_tensors(
    tensors: dict[str, torch.Tensor],
    shapes: dict[str, list[int]],
    source: str = "compact tensors",
    *,
    expected: dict[str, tuple[int, ...]] | None = None,
    max_dense_bytes: int = MAX_DENSE_BYTES,
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`compact_tensors`, after :func:`check_expansion`; ``source`` names the file in errors."""
    check_expansion(tensors, shapes, source, expected=expected, max_dense_bytes=max_dense_bytes)
    dense = {name: t for name, t in tensors.items() if not name.endswith((VALUES_SUFFIX, MASK_SUFFIX))}
    for name, shape in shapes.items():
        values, packed = tensors[name + VALUES_SUFFIX], tensors[name + MASK_SUFFIX]
        keep = unpack_mask(packed, [math.prod(shape)])
        if int(keep.sum()) != values.numel():
            raise TicketError(f"{source}: {name!r} has {values.numel()} values for {int(keep.sum())} kept weights")
        flat = torch.zeros(math.prod(shape), dtype=values.dtype)  # all-zero bits: what pruning left
        flat[keep] = values
        dense[name] = flat.reshape(shape)
    return dense


def model_tensor_shapes(directory: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Shapes of the tensors of the model ``directory/config.json`` describes (built on the meta device,
    nothing allocated); None without a config.json or for an architecture transformers does not know."""
    config_path = Path(directory) / MODEL_CONFIG_FILE
    if not config_path.is_file():
        return None
    # Here, not at module level: transformers' modeling code takes over a second to import, and
    # `import hf_tickets` (which registers the Hub, and with it this module) should not pay for it.
    import transformers
    from transformers import AutoConfig, PreTrainedModel

    try:
        config = AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TicketError(f"{config_path} is not a usable model config: {' '.join(str(err).split())}") from err
    architectures = getattr(config, "architectures", None)
    name = architectures[0] if isinstance(architectures, list) and architectures else None
    model_class = getattr(transformers, name, None) if isinstance(name, str) else None
    if not (isinstance(model_class, type) and issubclass(model_class, PreTrainedModel)):
        logger.warning(
            "%s: architecture %r unknown to transformers; tensor sizes checked against limits only",
            config_path,
            name,
        )
        return None
    try:
        with torch.device("meta"):
            model = model_class(config)
    except Exception as err:  # noqa: BLE001 - any failure to build the described model means the config is unusable
        raise TicketError(f"{config_path}: cannot build {name} from it: {err}") from err
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


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


def to_dense(
    src: str | Path, dst: str | Path, *, check_model: bool = True, max_dense_bytes: int = MAX_DENSE_BYTES
) -> Path:
    """Expand the compact file ``src`` into a standard safetensors file at ``dst``.

    With a ``config.json`` beside ``src`` (and ``check_model``), every tensor must be one of that
    model's, with its shape; the dense file may never exceed ``max_dense_bytes``. Both are checked
    before anything is allocated.
    """
    src = Path(src)
    tensors, metadata = _read(src)
    if metadata.get("format") != COMPACT_FORMAT:
        raise TicketError(f"{src} is not a compact hf_tickets checkpoint (format={metadata.get('format')!r})")
    if metadata.get("format_version") != COMPACT_FORMAT_VERSION:
        raise TicketError(f"{src} has compact format version {metadata.get('format_version')!r}; upgrade hf_tickets")
    try:
        shapes, dense_metadata = json.loads(metadata["shapes"]), json.loads(metadata["dense_metadata"])
    except (KeyError, ValueError, RecursionError) as err:
        raise TicketError(f"{src} has damaged metadata: {err}") from err
    if not isinstance(dense_metadata, dict) or not all(isinstance(v, str) for v in dense_metadata.values()):
        raise TicketError(f"{src}: metadata field 'dense_metadata' must be an object of strings")
    expected = model_tensor_shapes(src.parent) if check_model else None
    dense = expand_tensors(tensors, shapes, source=str(src), expected=expected, max_dense_bytes=max_dense_bytes)
    return atomic_write(dst, lambda tmp: save_file(dense, tmp, metadata=dense_metadata or None))


def _weight_files(directory: Path, to: str) -> list[Path]:
    """The weight files of a checkpoint directory that converting ``to`` a form would change."""
    files = [p for p in sorted(directory.glob("*.safetensors")) if p.name != MASKS_FILE]
    compact = [p for p in files if p.name.endswith(COMPACT_SUFFIX)]
    return compact if to == "dense" else [p for p in files if p not in compact]


def _converted_name(name: str, to: str) -> str:
    if to == "dense":
        return name[: -len(COMPACT_SUFFIX)] + ".safetensors"
    return name[: -len(".safetensors")] + COMPACT_SUFFIX


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    *,
    keep_source: bool = True,
    in_place: bool = False,
    max_dense_bytes: int = MAX_DENSE_BYTES,
) -> list[Path]:
    """Convert a file, or every weight file of a checkpoint directory, ``to`` ``"dense"`` or ``"compact"``.

    For a directory, ``dst`` is a directory that receives the converted weights and a copy of the
    other files (config, ticket, card), so it is a complete checkpoint. ``dst`` equal to ``src`` is
    refused unless ``in_place=True`` or ``keep_source=False`` (which removes the converted sources).
    Returns the files written.
    """
    if to not in ("dense", "compact"):
        raise TicketError(f"convert to 'dense' or 'compact', not {to!r}")
    src, dst = Path(src), Path(dst)

    def write(source: Path, target: Path) -> Path:
        if to == "dense":
            return to_dense(source, target, max_dense_bytes=max_dense_bytes)
        return to_compact(source, target)

    if not src.exists():
        raise TicketError(f"{src} does not exist")
    same = dst.exists() and dst.resolve() == src.resolve()
    if same and keep_source and not in_place:
        raise TicketError(
            f"destination {dst} is the source; pass a new destination, or in_place=True (`--in-place`) to "
            "write the converted files beside the sources"
        )
    if not src.is_dir():
        if not src.is_file():
            raise TicketError(f"{src} is not a file or a directory")
        target = dst / _converted_name(src.name, to) if dst.is_dir() else dst
        if target.exists() and target.resolve() == src.resolve():
            raise TicketError(f"converting {src} would overwrite it with its own conversion; choose another name")
        written = [write(src, target)]
        if not keep_source:
            src.unlink()
        return written
    sources = _weight_files(src, to)
    if not sources:
        raise TicketError(f"{src} holds no {'compact' if to == 'dense' else 'dense'} safetensors weights to convert")
    if dst.exists() and not dst.is_dir():
        raise TicketError(f"{dst} exists and is not a directory; a checkpoint directory converts into a directory")
    dst.mkdir(parents=True, exist_ok=True)
    if not same:
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
