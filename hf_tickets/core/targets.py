"""Which parameters a ticket covers.

Names are always relative to the *base model* (``model.base_model``: ``bert`` inside
``BertForSequenceClassification``), so a ticket found with one head applies to any other head
on the same encoder. Targets are found by module type and name pattern, never by a fixed list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from hf_tickets.core.errors import TicketError

try:  # GPT-2 style linear layers; absent in exotic installs
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = ()

_LINEAR_TYPES = (nn.Linear,) + ((Conv1D,) if isinstance(Conv1D, type) else ())
_EMBEDDING_NAME = re.compile(r"(^|\.)embeddings?(\.|_|$)")
_POOLER_NAME = re.compile(r"(^|\.)pooler(\.|$)")

#: Preset name -> (encoder linears, pooler, embeddings). "auto" is the paper's choice.
PRESETS: dict[str, tuple[bool, bool, bool]] = {
    "auto": (True, False, False),
    "encoder": (True, False, False),
    "encoder+pooler": (True, True, False),
    "encoder+embeddings": (True, False, True),
    "all": (True, True, True),
}

TargetSpec = str | Sequence[str]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / torch.compile / Accelerate wrappers, which hide the real module."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def base_model_of(model: nn.Module) -> nn.Module:
    """The encoder a ticket's names are relative to (the model itself if it has no head)."""
    model = unwrap_model(model)
    base = getattr(model, "base_model", model)
    return base if isinstance(base, nn.Module) else model


def base_model_prefix(model: nn.Module) -> str:
    model = unwrap_model(model)
    base = base_model_of(model)
    return "" if base is model else getattr(model, "base_model_prefix", "")


def _preset_matches(name: str, module: nn.Module, preset: tuple[bool, bool, bool]) -> bool:
    encoder, pooler, embeddings = preset
    is_embedding_part = bool(_EMBEDDING_NAME.search(name)) or isinstance(module, nn.Embedding)
    is_pooler = bool(_POOLER_NAME.search(name))
    if is_embedding_part:
        return embeddings and isinstance(module, _LINEAR_TYPES + (nn.Embedding,))
    if not isinstance(module, _LINEAR_TYPES):
        return False
    return pooler if is_pooler else encoder


def resolve_targets(model: nn.Module, targets: TargetSpec = "auto") -> list[str]:
    """Parameter names (relative to the base model) of the weight matrices to prune.

    ``targets`` is a preset name (see ``PRESETS``), a regular expression fully matching module
    names, or a list of module-name suffixes (like peft's ``target_modules``).
    """
    base = base_model_of(model)
    prunable = _LINEAR_TYPES + (nn.Embedding,)
    if isinstance(targets, str) and targets in PRESETS:
        preset = PRESETS[targets]
        select = lambda name, module: _preset_matches(name, module, preset)  # noqa: E731
    elif isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as err:
            raise TicketError(
                f"targets={targets!r} is neither a preset ({', '.join(PRESETS)}) nor a valid regex: {err}"
            ) from err

        def select(name, module):
            return isinstance(module, prunable) and pattern.fullmatch(name)

    elif isinstance(targets, Sequence) and targets and all(isinstance(t, str) for t in targets):
        suffixes = tuple(targets)

        def select(name, module):
            return isinstance(module, prunable) and any(name == s or name.endswith("." + s) for s in suffixes)
    else:
        raise TicketError(f"targets must be a preset name, a regex or a list of module names, got {targets!r}")

    names = [
        f"{name}.weight"
        for name, module in base.named_modules()
        if name and isinstance(getattr(module, "weight", None), torch.Tensor) and select(name, module)
    ]
    if not names:
        raise TicketError(
            f"targets={targets!r} matched no weight matrix in {type(base).__name__}; "
            f"modules look like: {[n for n, _ in base.named_modules()][1:6]}"
        )
    return names
