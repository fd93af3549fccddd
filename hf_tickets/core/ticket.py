"""A lottery ticket: one boolean keep-mask per target tensor, beside (never inside) the model.

Masks are keyed by parameter name relative to the base model, so a ticket found on
``BertForMaskedLM`` applies to ``BertForSequenceClassification`` and back; the model's own
``state_dict`` keys never change. On disk a ticket is a directory with two files:

- ``ticket_masks.safetensors``: masks bit-packed (1 bit per weight), dense shapes and pruned
  counts in the metadata, plus a small fingerprint of the base weights;
- ``ticket_config.json``: what the ticket is and where it came from.

Only safetensors and JSON are ever read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_tickets.core.atomic_files import atomic_write_json
from hf_tickets.core.errors import TicketError
from hf_tickets.core.remote import remote_store
from hf_tickets.core.selection import count_pruned
from hf_tickets.core.shards import full_shape, full_weight, zero_pruned_
from hf_tickets.core.targets import base_model_of, base_model_prefix, unwrap_model
from hf_tickets.core.ticket_files import load_packed_masks, save_packed_masks
from hf_tickets.core.version import __version__

FORMAT_VERSION = 1
MASKS_FILE = "ticket_masks.safetensors"
CONFIG_FILE = "ticket_config.json"

#: Weights at a few fixed positions per tensor identify the base model cheaply.
FINGERPRINT_POSITIONS = 32
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TicketConfig:
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise TicketError(
                f"ticket format {data['format_version']} is newer than this hf_tickets "
                f"({__version__}, format {FORMAT_VERSION}); upgrade hf_tickets"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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
    return torch.linspace(0, numel - 1, min(FINGERPRINT_POSITIONS, numel)).round().long()


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
        """Cosine between the model's surviving weights and the recorded base weights, at fixed positions."""
        if not self.fingerprint:
            return None
        params = self.parameters_of(model)
        recorded, current = [], []
        for name, values in self.fingerprint.items():
            if name not in params:
                continue
            alive = self.masks[name].reshape(-1)[fingerprint_positions(self.masks[name].numel())]
            recorded.append(values[alive])
            current.append(_values_at_positions(params[name])[alive])
        a, b = torch.cat(recorded), torch.cat(current)
        if a.numel() == 0:
            return None
        denom = a.norm() * b.norm()
        return float(a @ b / denom) if denom > 0 else 0.0

    def apply(self, model: nn.Module, verify_base: bool = True) -> ApplyReport:
        """Zero the pruned weights of ``model`` in place. All checks run first: on error nothing changes.

        ``verify_base=False`` skips the fingerprint check (e.g. for randomly re-initialised weights).
        Sharded parameters (FSDP2, DeepSpeed ZeRO-3) are masked on the shard each rank holds; the
        fingerprint check then gathers weights, so every rank must call ``apply``.
        """
        params = self.parameters_of(model)
        similarity = self.base_similarity(model)
        if verify_base and similarity is not None and similarity < FINGERPRINT_MIN_SIMILARITY:
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
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_packed_masks(directory / MASKS_FILE, self.masks, self.fingerprint)
        atomic_write_json(directory / CONFIG_FILE, self.config.to_dict())
        return directory

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
        directory = remote_store().download(text, revision=revision, token=token, cache_dir=cache_dir)
        return cls._load_directory(Path(directory))

    @classmethod
    def _load_directory(cls, directory: Path) -> Ticket:
        config_path, masks_path = directory / CONFIG_FILE, directory / MASKS_FILE
        for required in (config_path, masks_path):
            if not required.is_file():
                raise TicketError(f"{directory} is not a ticket: {required.name} is missing")
        try:
            config = TicketConfig.from_dict(json.loads(config_path.read_text()))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            raise TicketError(f"{config_path} is not valid ticket JSON: {err}") from err
        masks, fingerprint = load_packed_masks(masks_path)
        if set(config.per_tensor_sparsity) and set(config.per_tensor_sparsity) != set(masks):
            raise TicketError(f"{config_path} and {masks_path.name} name different tensors; the ticket is corrupt")
        return cls(masks, config, fingerprint)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload this ticket (and a model card) to the Hub; see ``hf_tickets.hub.upload.push_ticket``."""
        return remote_store().push(self, repo_id, **kwargs)
