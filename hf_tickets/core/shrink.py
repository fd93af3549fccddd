"""``shrink(model, ticket)``: physically remove the heads and FFN neurons a ticket prunes whole.

Transformers 5 dropped head pruning: ``PreTrainedModel.prune_heads``, ``find_pruneable_heads_and_indices``
and the application of ``config.pruned_heads`` by ``from_pretrained`` are gone; only
``pytorch_utils.prune_linear_layer`` remains, and BERT's attention now infers the head count from the
projection width (``view(..., -1, head_size)``), so a narrower layer runs as is. The stock config can
express neither per-layer head counts nor per-layer FFN widths, hence two modes:

- **default**: every whole head and neuron goes. Heads are cut with ``prune_linear_layer`` and recorded
  in ``config.pruned_heads`` (``{"layer index": [original head indices]}``); unequal FFN widths are
  recorded in ``config.intermediate_sizes`` (one per layer; ``intermediate_size`` is their maximum).
  When either is needed, ``save_shrunk`` writes a small modeling file (transformers and torch only)
  beside the weights and points ``config.auto_map`` at it, so
  ``AutoModel*.from_pretrained(OUT, trust_remote_code=True)`` rebuilds the model without hf_tickets.
  Equal widths and no removed heads (e.g. ``layerwise_neurons``) need no file.
- **stock_config=True**: only what the stock config holds: pruned heads stay as zeros, and every layer
  loses the same number of neurons (the smallest count any layer prunes; the rest stay as zeros).
  Plain ``AutoModel*.from_pretrained(OUT)`` loads it.

Removing a whole unit changes no output: its output columns were zero (``Ticket.apply`` runs first).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from hf_tickets.core.atomic_files import atomic_write_text
from hf_tickets.core.errors import TicketError
from hf_tickets.core.structured import HEAD_PARTS, NEURON_PARTS, layer_parts, num_heads_of, units_of
from hf_tickets.core.targets import base_model_of, unwrap_model
from hf_tickets.core.ticket import Ticket

logger = logging.getLogger(__name__)

MODELING_FILE = "modeling_hf_tickets_shrunk.py"
_LAYER_INDEX = re.compile(r"(?:^|\.)layer\.(\d+)$")
#: Architecture suffix -> Auto class, for the auto_map of a model with removed heads.
_AUTO_CLASSES = {
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForMultipleChoice": "AutoModelForMultipleChoice",
    "ForPreTraining": "AutoModelForPreTraining",
    "Model": "AutoModel",
}


#: Config attribute recording what ``shrink`` removed (saved in config.json; transformers ignores it).
RECORD_KEY = "hf_tickets_shrink"


def shrink(model: nn.Module, ticket: Ticket, stock_config: bool = False) -> nn.Module:
    """Apply ``ticket`` to ``model`` and remove (in place) the heads and neurons it prunes whole; returns ``model``.

    ``stock_config=True`` removes only what a stock config can describe (see the module doc), so the
    saved model needs no remote code. The model may be fine-tuned: its weights are not checked against
    the ticket's base. What was removed is recorded in ``model.config.hf_tickets_shrink``.
    """
    ticket.apply(model, verify_base=False)
    module = unwrap_model(model)
    base = base_model_of(module)
    before = sum(p.numel() for p in module.parameters())
    layers = {prefix: _layer_index(prefix) for prefix in layer_parts(n for n, _ in base.named_parameters())}
    if not layers:
        raise TicketError(f"{type(module).__name__} has no BERT-style layers (encoder.layer.N) to shrink")
    pruned_heads, pruned_neurons = _whole_units(ticket, None if stock_config else num_heads_of(module))
    removed_heads = {}
    for prefix, heads in pruned_heads.items():
        removed_heads[str(layers[prefix])] = _remove_heads(base.get_submodule(prefix), heads)
    if removed_heads:
        module.config.pruned_heads = dict(sorted(removed_heads.items(), key=lambda item: int(item[0])))
    uniform = min(len(pruned_neurons.get(prefix, [])) for prefix in layers)
    removed_neurons = {}
    for prefix in layers:
        gone = pruned_neurons.get(prefix, [])[: uniform if stock_config else None]
        if gone:
            _remove_neurons(base.get_submodule(prefix), gone)
        removed_neurons[str(layers[prefix])] = len(gone)
    widths = [module.config.intermediate_size - removed_neurons[str(i)] for i in sorted(layers.values())]
    module.config.intermediate_size = max(widths)
    if len(set(widths)) > 1:
        module.config.intermediate_sizes = widths
    record = {
        "ticket_sparsity": ticket.sparsity,
        "ticket_strategy": ticket.config.strategy,
        "removed_heads": removed_heads,
        "removed_neurons": removed_neurons,
        "zero_neurons_left": sum(len(v) for v in pruned_neurons.values()) - sum(removed_neurons.values()),
        "parameters_before": before,
        "parameters_after": sum(p.numel() for p in module.parameters()),
    }
    setattr(module.config, RECORD_KEY, record)
    logger.info(
        "shrink: removed %d heads and %d FFN neurons (%d pruned neurons left as zeros); parameters %d -> %d",
        sum(len(h) for h in removed_heads.values()),
        sum(removed_neurons.values()),
        record["zero_neurons_left"],
        before,
        record["parameters_after"],
    )
    return model


def _layer_index(prefix: str) -> int:
    match = _LAYER_INDEX.search(prefix)
    if match is None:  # pragma: no cover - layer_parts only yields "...layer.N"
        raise TicketError(f"cannot read a layer index from {prefix!r}")
    return int(match[1])


def _whole_units(ticket: Ticket, num_heads: int | None) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per layer prefix, the heads and the neurons whose every weight ``ticket`` prunes, in index order."""
    heads: dict[str, list[int]] = {}
    neurons: dict[str, list[int]] = {}
    present = {part for parts in layer_parts(ticket.masks).values() for part in parts}
    kinds = tuple(
        kind
        for kind, wanted in (("head", HEAD_PARTS), ("neuron", NEURON_PARTS))
        if present & set(wanted) and (kind == "neuron" or num_heads is not None)
    )
    for layer_units in units_of(ticket.masks, kinds, num_heads) if kinds else []:
        for unit in layer_units:
            if not any(bool(view.any()) for view in unit.views(ticket.masks)):
                (heads if unit.kind == "head" else neurons).setdefault(unit.layer, []).append(unit.index)
    return heads, neurons


def _remove_heads(layer: nn.Module, heads: list[int]) -> list[int]:
    attention = layer.attention.self
    size = attention.attention_head_size
    # A layer with no head cannot run (its projections would be empty): the last one stays, as zeros.
    gone = set(heads[: attention.num_attention_heads - 1])
    keep = torch.tensor(
        [h * size + i for h in range(attention.num_attention_heads) if h not in gone for i in range(size)],
        dtype=torch.long,
    )
    for name in ("query", "key", "value"):
        setattr(attention, name, prune_linear_layer(getattr(attention, name), keep, dim=0))
    layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, keep, dim=1)
    attention.num_attention_heads -= len(gone)
    attention.all_head_size = attention.num_attention_heads * size
    return sorted(gone)


def _remove_neurons(layer: nn.Module, neurons: list[int]) -> None:
    gone = set(neurons)
    keep = torch.tensor([j for j in range(layer.intermediate.dense.out_features) if j not in gone], dtype=torch.long)
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
    layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)


# ------------------------------------------------------------------------------ saving
_MODELING_TEMPLATE = '''"""Written by hf_tickets shrink: a BERT with heads or FFN neurons removed per layer.

Stock configs hold neither config.pruned_heads (transformers 5 dropped it) nor per-layer FFN widths
(config.intermediate_sizes), so this file narrows each layer before the weights are loaded.
It needs transformers and torch only:
    AutoModel*.from_pretrained(this_folder, trust_remote_code=True)
"""

import transformers
from torch import nn


def _narrow_attention(model):
    pruned = getattr(model.config, "pruned_heads", None) or {{}}
    for index, layer in enumerate(model.base_model.encoder.layer):
        removed = len(pruned.get(str(index), []))
        if not removed:
            continue
        attention = layer.attention.self
        attention.num_attention_heads -= removed
        attention.all_head_size = attention.num_attention_heads * attention.attention_head_size
        hidden = attention.query.in_features
        for name in ("query", "key", "value"):
            setattr(attention, name, nn.Linear(hidden, attention.all_head_size))
        layer.attention.output.dense = nn.Linear(attention.all_head_size, layer.attention.output.dense.out_features)


def _narrow_ffn(model):
    widths = getattr(model.config, "intermediate_sizes", None)
    for layer, width in zip(model.base_model.encoder.layer, widths or []):
        if width != layer.intermediate.dense.out_features:
            layer.intermediate.dense = nn.Linear(layer.intermediate.dense.in_features, width)
            layer.output.dense = nn.Linear(width, layer.output.dense.out_features)
{classes}'''

_CLASS_TEMPLATE = """

class Shrunk{name}(transformers.{name}):
    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        _narrow_attention(self)
        _narrow_ffn(self)
"""


def auto_class_of(class_name: str) -> str | None:
    """The Auto class that loads a stock model class (``BertForMaskedLM`` -> ``AutoModelForMaskedLM``)."""
    suffix = next((s for s in _AUTO_CLASSES if class_name.endswith(s)), None)
    return _AUTO_CLASSES[suffix] if suffix else None


def save_shrunk(model: nn.Module, directory: str | Path, tokenizer=None) -> Path:
    """Save a shrunk model; with removed heads or unequal widths, also the modeling file ``config.auto_map`` names."""
    directory = Path(directory)
    model = unwrap_model(model)
    config = model.config
    if getattr(config, "pruned_heads", None) or getattr(config, "intermediate_sizes", None):
        names = list(dict.fromkeys([type(model).__name__, type(base_model_of(model)).__name__]))
        auto_map = {}
        for name in names:
            auto = auto_class_of(name)
            if auto is None or not hasattr(transformers, name):
                raise TicketError(f"cannot save {name} with per-layer shapes: not a stock transformers class")
            auto_map[auto] = f"{MODELING_FILE[:-3]}.Shrunk{name}"
        config.auto_map = auto_map
        directory.mkdir(parents=True, exist_ok=True)
        classes = "".join(_CLASS_TEMPLATE.format(name=name) for name in names)
        atomic_write_text(directory / MODELING_FILE, _MODELING_TEMPLATE.format(classes=classes))
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def load_hint(model: nn.Module, directory: str | Path) -> str:
    """How to load what ``save_shrunk`` wrote: its Auto class (+ ``trust_remote_code`` with the modeling file)."""
    auto = auto_class_of(type(unwrap_model(model)).__name__) or "AutoModel"
    remote = ", trust_remote_code=True" if (Path(directory) / MODELING_FILE).is_file() else ""
    return f"transformers.{auto}.from_pretrained({str(directory)!r}{remote})"
