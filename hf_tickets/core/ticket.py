"""A lottery ticket: one boolean keep-mask per target tensor, beside (never inside) the model.

Masks are keyed by parameter name relative to the base model, so a ticket found on
``BertForMaskedLM`` applies to ``BertForSequenceClassification`` and back; the model's own
``state_dict`` keys never change. On disk a ticket is a directory with two files:

- ``ticket_masks.safetensors``: masks bit-packed (1 bit per weight), dense shapes and pruned
  counts in the metadata, plus a small fingerprint of the base weights;
- ``ticket_config.json``: what the ticket is and where it came from, and the SHA-256 of the masks
  file (``masks_sha256``), so the two are committed together: a save killed at any moment, a bit
  flip or a masks file from another save is detected on load.

Saving writes both files to temporaries, publishes the new config as ``.ticket_config.json.pending``,
then renames the masks and the config into place. Loading accepts the config whose checksum matches
the masks file, so it reads the old ticket or the new one, never a mix. Only safetensors and JSON are
ever read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_tickets.core.errors import TicketError
from hf_tickets.core.remote import remote_store
from hf_tickets.core.selection import count_pruned
from hf_tickets.core.shards import full_shape, full_weight, zero_pruned_
from hf_tickets.core.targets import base_model_of, base_model_prefix, unwrap_model
from hf_tickets.core.ticket_files import (
    CONFIG_FILE,
    MASKS_FILE,
    PENDING_CONFIG_FILE,
    SHA256_RE,
    fingerprint_size,
    read_ticket_files,
    save_ticket_files,
)
from hf_tickets.core.version import __version__

logger = logging.getLogger(__name__)

#: 2 added ``masks_sha256``; format-1 tickets (no checksum) still load, with a warning.
FORMAT_VERSION = 2
__all__ = ["CONFIG_FILE", "MASKS_FILE", "PENDING_CONFIG_FILE", "ApplyReport", "Ticket", "TicketConfig"]
#: Fine-tuning keeps the cosine with θ0 near 1; another checkpoint or a random init gives ~0.
FINGERPRINT_MIN_SIMILARITY = 0.5


@dataclass
class TicketConfig:
    base_model: str | None = None
    base_model_revision: str | None = None
    base_model_prefix: str = ""
    model_type: str | None = None
    targets: Any = "auto"
    strategy: str = "global_magnitude"
    sparsity: float = 0.0
    per_tensor_sparsity: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    hf_tickets_version: str = __version__
    masks_sha256: str | None = None  # of the masks file saved with this config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "ticket config") -> TicketConfig:
        """Validate every known field (``source`` names the file in errors); unknown fields are ignored."""
        if not isinstance(data, dict):
            raise TicketError(f"{source} must hold a JSON object, not {type(data).__name__}")
        version = data.get("format_version", 1)
        if not _is_int(version) or version < 1:
            raise TicketError(f"{source}: field 'format_version' = {version!r} is not a format number")
        if version > FORMAT_VERSION:
            raise TicketError(
                f"{source}: ticket format {version} is newer than this hf_tickets "
                f"({__version__}, format {FORMAT_VERSION}); upgrade hf_tickets"
            )
        for name, valid, expected in _FIELD_CHECKS:
            if name in data and not valid(data[name]):
                raise TicketError(f"{source}: field {name!r} = {_short(data[name])} is not {expected}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _optional_str(value) -> bool:
    return value is None or isinstance(value, str)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_FIELD_CHECKS = [
    ("base_model", _optional_str, "a string or null"),
    ("base_model_revision", _optional_str, "a string or null"),
    ("base_model_prefix", lambda v: isinstance(v, str), "a string"),
    ("model_type", _optional_str, "a string or null"),
    (
        "targets",
        lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(t, str) for t in v)),
        "a string or a list of strings",
    ),
    ("strategy", lambda v: isinstance(v, str), "a string"),
    ("sparsity", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    (
        "per_tensor_sparsity",
        lambda v: isinstance(v, dict) and all(_is_number(x) and 0 <= x <= 1 for x in v.values()),
        "an object of numbers in [0, 1]",
    ),
    ("provenance", lambda v: isinstance(v, dict), "an object"),
    ("hf_tickets_version", lambda v: isinstance(v, str), "a string"),
    (
        "masks_sha256",
        lambda v: v is None or (isinstance(v, str) and SHA256_RE.fullmatch(v) is not None),
        "a SHA-256 hex digest",
    ),
]


@dataclass
class ApplyReport:
    tensors: int
    weights: int
    pruned: int
    base_similarity: float | None

    @property
    def sparsity(self) -> float:
        return self.pruned / self.weights if self.weights else 0.0


def fingerprint_positions(numel: int) -> torch.Tensor:
    return torch.linspace(0, numel - 1, fingerprint_size(numel)).round().long()


def _values_at_positions(p: torch.Tensor) -> torch.Tensor:
    # full_weight: a sharded parameter is gathered (one at a time, collectively); a plain one is read as is.
    weight = full_weight(p).reshape(-1)
    return weight[fingerprint_positions(weight.numel()).to(weight.device)].float().cpu()


def _fingerprint(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: _values_at_positions(p) for name, p in parameters.items()}


class Ticket:
    """Keep-masks (True = kept) for a set of tensors of a base model, plus their provenance."""

    def __init__(
        self,
        masks: dict[str, torch.Tensor],
        config: TicketConfig | None = None,
        fingerprint: dict[str, torch.Tensor] | None = None,
    ):
        if not masks:
            raise TicketError("a ticket needs at least one mask")
        for name, mask in masks.items():
            if mask.dtype != torch.bool:
                raise TicketError(f"mask for {name} must be boolean, got {mask.dtype}")
        self.masks = {name: mask.detach().cpu() for name, mask in masks.items()}
        # Masks are treated as read-only: pruning makes a new ticket, so counts are computed once.
        self._pruned = {n: count_pruned(m) for n, m in self.masks.items()}
        self.config = config or TicketConfig()
        self.fingerprint = fingerprint or {}
        self.config.sparsity = self.sparsity
        self.config.per_tensor_sparsity = self.per_tensor_sparsity

    # ----------------------------------------------------------------- counts
    @property
    def num_weights(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    @property
    def num_pruned(self) -> int:
        return sum(self._pruned.values())

    @property
    def sparsity(self) -> float:
        return self.num_pruned / self.num_weights

    @property
    def per_tensor_sparsity(self) -> dict[str, float]:
        return {n: self._pruned[n] / m.numel() for n, m in self.masks.items()}

    def equals(self, other: Ticket) -> bool:
        return self.masks.keys() == other.masks.keys() and all(
            torch.equal(m, other.masks[n]) for n, m in self.masks.items()
        )

    def __repr__(self) -> str:
        return (
            f"Ticket(sparsity={self.sparsity:.4f}, tensors={len(self.masks)}, weights={self.num_weights}, "
            f"base_model={self.config.base_model!r}, strategy={self.config.strategy!r})"
        )

    # ------------------------------------------------------------------ apply
    def parameters_of(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The model's tensors this ticket covers, checked for presence and shape."""
        base = base_model_of(model)
        params = {}
        for name, mask in self.masks.items():
            try:
                param = base.get_parameter(name)
            except AttributeError:
                raise TicketError(
                    f"{type(unwrap_model(model)).__name__} has no tensor {name!r} that this ticket "
                    f"(found on {self.config.base_model or self.config.model_type!r}) prunes"
                ) from None
            if tuple(full_shape(param)) != tuple(mask.shape):
                raise TicketError(
                    f"shape mismatch for {name}: model has {tuple(full_shape(param))}, ticket has "
                    f"{tuple(mask.shape)}; this ticket was found on "
                    f"{self.config.base_model or self.config.model_type!r}"
                )
            params[name] = param
        return params

    def base_similarity(self, model: nn.Module) -> float | None:
        """Cosine between the model's surviving weights and the recorded base weights, at fixed positions;
        None when it cannot be measured (see :meth:`apply` for the checks)."""
        similarity, _ = self._compare_with_base(self.parameters_of(model))
        return similarity

    def _compare_with_base(self, params: dict[str, nn.Parameter]) -> tuple[float | None, str | None]:
        """(similarity, None) or (None, why the base cannot be checked)."""
        missing = [name for name in self.masks if name not in self.fingerprint]
        if missing:
            what = "no fingerprint" if len(missing) == len(self.masks) else f"no fingerprint for {missing[0]!r}"
            return None, f"the ticket records {what} of its base model's weights"
        recorded, current = [], []
        for name, mask in self.masks.items():
            positions = fingerprint_positions(mask.numel())
            alive = mask.reshape(-1)[positions]
            recorded.append(self.fingerprint[name][alive])
            # Every tensor is read, even if nothing survives: gathering a sharded one is a collective.
            current.append(_values_at_positions(params[name])[alive])
        a, b = torch.cat(recorded), torch.cat(current)
        if not torch.isfinite(a).all():
            return None, "the ticket's fingerprint of its base model holds inf or NaN"
        if a.numel() == 0:
            return None, "no fingerprint position survives pruning, so the weights cannot be compared"
        if not torch.isfinite(b).all():
            return None, "the model's weights hold inf or NaN at the fingerprint positions"
        denom = a.norm() * b.norm()
        return (float(a @ b / denom) if denom > 0 else 0.0), None

    def apply(self, model: nn.Module, verify_base: bool = True) -> ApplyReport:
        """Zero the pruned weights of ``model`` in place. All checks run first: on error nothing changes.

        The model must be the base the ticket was found on (or a fine-tuned copy of it): its weights at
        the fingerprint positions are compared with the recorded ones, and a fingerprint that cannot be
        checked (missing, inf/NaN, no position left unpruned) is an error too. ``verify_base=False``
        skips this (e.g. for randomly re-initialised weights). Sharded parameters (FSDP2, DeepSpeed
        ZeRO-3) are masked on the shard each rank holds; the fingerprint check then gathers weights,
        so every rank must call ``apply``.
        """
        params = self.parameters_of(model)
        similarity, problem = self._compare_with_base(params)
        if verify_base and problem is not None:
            raise TicketError(
                f"cannot check that the model is the base this ticket was found on ({self.config.base_model!r}): "
                f"{problem}. Pass verify_base=False to apply the mask without that check."
            )
        if verify_base and similarity < FINGERPRINT_MIN_SIMILARITY:
            raise TicketError(
                f"the model's weights do not match the base model this ticket was found on "
                f"({self.config.base_model!r}): fingerprint similarity {similarity:.2f} < "
                f"{FINGERPRINT_MIN_SIMILARITY}. Load that base model, or pass verify_base=False "
                f"to apply the mask to other weights on purpose."
            )
        with torch.no_grad():
            for name, param in params.items():
                zero_pruned_(param, self.masks[name])
        return ApplyReport(len(params), self.num_weights, self.num_pruned, similarity)

    def record_base(self, model: nn.Module, name_or_path: str | None = None) -> Ticket:
        """Record ``model`` (θ0) as this ticket's base: its name, revision and weight fingerprint."""
        params = self.parameters_of(model)
        self.fingerprint = _fingerprint(params)
        model = unwrap_model(model)
        model_config = getattr(model, "config", None)
        self.config.base_model = name_or_path or getattr(model_config, "_name_or_path", None) or None
        self.config.base_model_revision = getattr(model_config, "_commit_hash", None)
        self.config.base_model_prefix = base_model_prefix(model)
        self.config.model_type = getattr(model_config, "model_type", None)
        return self

    # -------------------------------------------------------------- save/load
    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the ticket to ``save_directory``; a process killed meanwhile leaves the old ticket or this one."""

        def config_for(masks_sha256: str) -> dict[str, Any]:
            self.config.masks_sha256, self.config.format_version = masks_sha256, FORMAT_VERSION
            return self.config.to_dict()

        save_ticket_files(Path(save_directory), self.masks, self.fingerprint, config_for)
        return Path(save_directory)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | None = None,
    ) -> Ticket:
        """Load from a local directory, or from a Hub repository (``revision`` pins a branch/tag/commit)."""
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            return cls._load_directory(path)
        text = str(name_or_path)
        if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
            raise TicketError(f"no ticket directory at {text!r} (expected {MASKS_FILE} and {CONFIG_FILE})")
        try:
            directory = remote_store().download(text, revision=revision, token=token, cache_dir=cache_dir)
        except TicketError as err:
            # A mistyped local path looks like a repo id: say that both readings failed, the local one first.
            if path.parent.is_dir():
                message = f"no ticket directory at {text!r} ({path.parent}/ has no {path.name!r}); as a Hub repo: {err}"
            else:
                message = f"{text!r} is not a local directory, and as a Hub repo: {err}"
            raise type(err)(message) from (err.__cause__ or err)
        return cls._load_directory(Path(directory), trust_pending=False)

    @classmethod
    def _load_directory(cls, directory: Path, trust_pending: bool = True) -> Ticket:
        """``trust_pending=False`` for downloaded folders: only a local save leaves a pending config."""
        masks, fingerprint, data, config_path = read_ticket_files(directory, trust_pending)
        config = TicketConfig.from_dict(data, str(config_path))
        if config.masks_sha256 is None:
            if config.format_version >= 2:
                raise TicketError(f"{config_path}: field 'masks_sha256' is missing (required since ticket format 2)")
            logger.warning(
                "%s is a format-1 ticket without a checksum: its masks file cannot be verified "
                "(re-save it with Ticket.save_pretrained to add one)",
                directory,
            )
        if set(config.per_tensor_sparsity) and set(config.per_tensor_sparsity) != set(masks):
            raise TicketError(
                f"{config_path}: field 'per_tensor_sparsity' and {MASKS_FILE} name different tensors; "
                "the ticket is corrupt"
            )
        return cls(masks, config, fingerprint)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload this ticket (and a model card) to the Hub; see ``hf_tickets.hub.upload.push_ticket``."""
        return remote_store().push(self, repo_id, **kwargs)
