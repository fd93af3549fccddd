"""Model cards for tickets and sparse checkpoints, built with ``huggingface_hub.ModelCard``.

The body comes from ``templates/ticket_card_template.md`` (the repo's ``model_cards/`` folder).
Every generated section sits between ``<!-- hf_tickets:section:NAME -->`` markers, so a card
regenerated after new results replaces those sections in the existing card: text a person added
outside the markers stays, and nothing is duplicated. Sections whose data is not given this time
(``results=None``, ``transfer=None``) keep what the existing card says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_tickets.core.ticket import Ticket
from hf_tickets.core.version import __version__
from hf_tickets.tasks.metrics import GLUE_MAIN_METRIC, MAIN_METRIC
from hf_tickets.training.results import LEADING_KEYS, REFERENCE_KEYS, TRAILING_KEYS

TEMPLATE_PATH = Path(__file__).parent / "templates" / "ticket_card_template.md"
TAGS = ["lottery-ticket", "pruning", "sparse"]
SECTION_RE = re.compile(r"<!-- hf_tickets:section:(\w+) -->.*?<!-- /hf_tickets:section:\1 -->", re.DOTALL)

# Keys of a results row that are not metrics.
# IMP rows also carry bookkeeping (train time, steps, early-bird savings): not scores.
_NOT_METRICS = {"epoch", "step", "seed", *LEADING_KEYS, *TRAILING_KEYS, *REFERENCE_KEYS}
_NOT_METRIC_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")
# The class the usage snippet loads the base model with, per Hub task type.
_AUTO_CLASS = {
    "text-classification": "AutoModelForSequenceClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
}
# Hub repo ids ("bert-base-uncased", "org/name"); local paths never go into `base_model` metadata.
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def metric_names(results: Sequence[Mapping]) -> list[str]:
    """Numeric metric keys of the results rows, in first-seen order."""
    names: list[str] = []
    for row in results:
        for key, value in row.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in _NOT_METRICS and not key.endswith(_NOT_METRIC_SUFFIXES) and key not in names:
                names.append(key)
    return names


def primary_metric(results: Sequence[Mapping], task: str | None = None) -> str | None:
    """The task's headline metric when present (``eval_accuracy`` for SST-2...), else the first score."""
    names = metric_names(results)
    preferred = MAIN_METRIC.get((task or "").lower())
    for candidate in (f"eval_{preferred}", preferred):
        if candidate in names:
            return candidate
    scores = [n for n in names if "loss" not in n]
    return (scores or names or [None])[0]


def full_model_score(results: Sequence[Mapping], metric: str) -> tuple[float | None, float | None]:
    """The unpruned model's score: an explicit ``full_score`` key, else the ticket's row at sparsity 0."""
    for row in results:
        if row.get("full_score") is not None:
            return float(row["full_score"]), row.get("full_std")
    for row in results:
        if not row.get("baseline") and float(row.get("sparsity", -1)) == 0.0 and row.get(metric) is not None:
            return float(row[metric]), None
    return None, None


def plot_results(ticket: Ticket, results: Sequence[Mapping], out_png: str | Path) -> Path | None:
    """The sparsity-versus-score PNG of the ticket's headline metric (None if no round has it)."""
    from hf_tickets.hub.plots import plot_sparsity_vs_score, split_results  # matplotlib only when a plot is made

    metric = primary_metric(results, ticket.config.provenance.get("task"))
    if metric is None or not split_results(results, metric)[0]:
        return None
    full, std = full_model_score(results, metric)
    return plot_sparsity_vs_score(results, metric, out_png, full_score=full, full_std=std)


def _task_info(provenance: Mapping) -> tuple[str | None, str | None, str | None]:
    """(Hub task type, dataset id, dataset config) for the ticket's task, as far as it is known."""
    task = str(provenance.get("task") or "").lower()
    dataset, config = provenance.get("dataset"), provenance.get("dataset_config")
    if task in GLUE_MAIN_METRIC:
        return "text-classification", dataset or "nyu-mll/glue", config or task
    if task.startswith("squad"):
        return "question-answering", dataset or "rajpurkar/squad", config
    if task in ("mlm", "fill-mask", "masked-lm"):
        return "fill-mask", dataset, config
    return provenance.get("task_type"), dataset, config


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list, tuple)):
        return "`" + json.dumps(value, default=str) + "`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _metrics_at_ticket(ticket: Ticket, results: Sequence[Mapping] | None) -> dict[str, float]:
    """The scores this ticket reached: ``provenance["metrics"]``, else the results row at its sparsity."""
    recorded = ticket.config.provenance.get("metrics")
    if isinstance(recorded, Mapping) and recorded:
        return {k: float(v) for k, v in recorded.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    rows = [r for r in results or [] if not r.get("baseline") and "sparsity" in r]
    if not rows:
        return {}
    row = min(rows, key=lambda r: abs(float(r["sparsity"]) - ticket.sparsity))
    if abs(float(row["sparsity"]) - ticket.sparsity) > 0.005:
        return {}
    return {name: float(row[name]) for name in metric_names([row]) if "loss" not in name}


def card_data(ticket: Ticket, results: Sequence[Mapping] | None = None, title: str | None = None) -> ModelCardData:
    """YAML metadata: library, base model, tags, dataset and a ``model-index`` at this sparsity."""
    config = ticket.config
    task_type, dataset, dataset_config = _task_info(config.provenance)
    eval_results = (
        [
            EvalResult(
                task_type=task_type,
                dataset_type=dataset,
                dataset_name=f"{dataset} {dataset_config}" if dataset_config else dataset,
                dataset_config=dataset_config,
                metric_type=name.removeprefix("eval_"),
                metric_value=value,
                metric_name=f"{name.removeprefix('eval_')} at {_pct(ticket.sparsity)} sparsity",
            )
            for name, value in _metrics_at_ticket(ticket, results).items()
        ]
        if task_type and dataset
        else []
    )
    base = config.base_model if config.base_model and _REPO_ID_RE.match(config.base_model) else None
    return ModelCardData(
        library_name="hf_tickets",
        base_model=base,
        tags=TAGS + [t for t in [config.model_type] if t],
        datasets=[dataset] if dataset else None,
        eval_results=eval_results or None,
        model_name=title if eval_results else None,
    )


def _usage(ticket: Ticket, repo_id: str | None, checkpoint: str | None, model_class: str) -> tuple[str, str, str]:
    repo = repo_id or "<this repo>"
    base = ticket.config.base_model or "<base model>"
    if checkpoint == "compact":
        intro = "The weights are in the compact form (surviving values + bitmask); expand them, then load as usual:"
        code = (
            f"hf-tickets pull {repo} ./checkpoint   # writes model.safetensors\n"
            f"python -c \"from transformers import {model_class}; {model_class}.from_pretrained('./checkpoint')\""
        )
        return intro, "bash", code
    if checkpoint == "dense":
        intro = "The pruned model is a standard checkpoint (pruned weights are zeros); the ticket files sit beside it:"
        code = (
            f"from transformers import {model_class}\nfrom hf_tickets import Ticket\n\n"
            f'model = {model_class}.from_pretrained("{repo}")\nticket = Ticket.from_pretrained("{repo}")  # the '
            "mask, e.g. to keep fine-tuning sparse"
        )
        return intro, "python", code
    intro = "Apply the ticket to its base model (any head: the masks are relative to the base model):"
    code = (
        f"from transformers import {model_class}\nfrom hf_tickets import Ticket\n\n"
        f'ticket = Ticket.from_pretrained("{repo}")\nmodel = {model_class}.from_pretrained("{base}")\n'
        "ticket.apply(model)  # zeroes the pruned weights; refuses a model that is not the ticket's base"
    )
    return intro, "python", code


def _template_values(ticket, results, transfer, plot_path, repo_id, checkpoint, model_class) -> dict[str, Any]:
    config = ticket.config
    provenance = dict(config.provenance)
    base = config.base_model or "an unnamed base model"
    title = f"Lottery ticket for {base} ({_pct(ticket.sparsity)} sparse)"
    how_found = [("Strategy", config.strategy), ("Targets", _fmt(config.targets)), ("Sparsity", _pct(ticket.sparsity))]
    how_found += [(key.replace("_", " ").capitalize(), _fmt(v)) for key, v in provenance.items() if key != "metrics"]

    values: dict[str, Any] = {"result_rows": [], "result_metrics": [], "metric": None, "full_score": None}
    if results:
        metric = primary_metric(results, provenance.get("task"))
        names = [metric] + [n for n in metric_names(results) if n != metric]
        full, _ = full_model_score(results, metric) if metric else (None, None)
        ordered = sorted(results, key=lambda r: (str(r.get("baseline") or ""), float(r.get("sparsity", 0))))
        values.update(
            metric=metric,
            result_metrics=names,
            full_score=_fmt(full) if full is not None else None,
            result_rows=[
                {
                    "kind": _fmt(r.get("baseline") or "ticket (IMP)"),
                    "round": _fmt(r.get("round", "")),
                    "sparsity": _pct(float(r["sparsity"])) if "sparsity" in r else "",
                    "values": [_fmt(r[n]) if r.get(n) is not None else "" for n in names],
                }
                for r in ordered
            ],
        )
    transfer_rows = [
        {
            "source": _fmt(t.get("source", "")),
            "task": _fmt(t.get("task", "")),
            "metric": _fmt(t.get("metric", "")),
            "score": _fmt(t.get("score", "")),
            "full_score": _fmt(t.get("full_score", "")),
            "matching": {True: "yes", False: "no"}.get(t.get("matching"), ""),
        }
        for t in transfer or []
    ]
    usage_intro, usage_language, usage = _usage(ticket, repo_id, checkpoint, model_class)
    return {
        **values,
        "title": title,
        "summary": (
            f"A lottery ticket (a pruning mask) for `{base}`, found and shared with "
            "[hf_tickets](https://pypi.org/project/hf-tickets/). "
            + (
                "This repo also holds the pruned model itself."
                if checkpoint
                else "Apply it to the base model to get the sparse subnetwork."
            )
        ),
        "how_found": how_found,
        "sparsity_pct": _pct(ticket.sparsity),
        "num_weights": f"{ticket.num_weights:,}",
        "num_pruned": f"{ticket.num_pruned:,}",
        "num_tensors": len(ticket.masks),
        "layers": [
            {"name": name, "shape": "×".join(map(str, ticket.masks[name].shape)), "sparsity": _pct(s)}
            for name, s in ticket.per_tensor_sparsity.items()
        ],
        "plot_path": plot_path if results else None,
        "transfer_rows": transfer_rows,
        "usage_intro": usage_intro,
        "usage_language": usage_language,
        "usage": usage,
        "provenance": [
            ("hf_tickets version (found with)", config.hf_tickets_version),
            ("hf_tickets version (card)", __version__),
            ("Base model", config.base_model or "unknown"),
            ("Base model revision", config.base_model_revision or "unknown"),
            ("Base model prefix", config.base_model_prefix or "none"),
            ("Model type", config.model_type or "unknown"),
            ("Ticket format version", config.format_version),
        ],
    }


def merge_sections(existing: str, new: str, keep: set[str] = frozenset()) -> str:
    """``existing`` with its marked sections replaced by ``new``'s (except those named in ``keep``).

    Sections only ``new`` has are appended; text outside the markers in ``existing`` is untouched.
    """
    new_sections = {m.group(1): m.group(0) for m in SECTION_RE.finditer(new)}
    seen: set[str] = set()

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name in seen:  # a duplicated section (hand edits): keep only the first copy
            return ""
        seen.add(name)
        return match.group(0) if name in keep or name not in new_sections else new_sections[name]

    merged = SECTION_RE.sub(replace, existing)
    missing = [block for name, block in new_sections.items() if name not in seen]
    return merged.rstrip("\n") + "".join(f"\n\n{block}" for block in missing) + "\n"


def ticket_card(
    ticket: Ticket,
    *,
    results: Sequence[Mapping] | None = None,
    transfer: Sequence[Mapping] | None = None,
    plot_path: str | None = None,
    existing: ModelCard | str | None = None,
    repo_id: str | None = None,
    checkpoint: str | None = None,
    model_class: str | None = None,
) -> ModelCard:
    """The model card of ``ticket``: metadata plus the sections of the template.

    ``results``: IMP rounds (dicts with ``round``, ``sparsity``, metrics, optional ``baseline`` and
    ``full_score``); ``transfer``: dicts with ``source, task, metric, score, full_score, matching``;
    ``plot_path``: where the card links the sparsity-versus-score PNG (relative to the repo);
    ``existing``: a previous card (object or text) whose sections are updated in place;
    ``repo_id``/``checkpoint`` (``None``, ``"dense"`` or ``"compact"``)/``model_class``: for the usage
    snippet (``model_class`` defaults to the Auto class of the ticket's task).
    """
    model_class = model_class or _AUTO_CLASS.get(_task_info(ticket.config.provenance)[0], "AutoModel")
    values = _template_values(ticket, results, transfer, plot_path, repo_id, checkpoint, model_class)
    data = card_data(ticket, results, title=values["title"])
    card = ModelCard.from_template(data, template_path=str(TEMPLATE_PATH), **values)
    if existing is None:
        return card

    old = existing if isinstance(existing, ModelCard) else ModelCard(str(existing), ignore_metadata_errors=True)
    keep = {name for name, given in (("results", results), ("transfer", transfer)) if not given}
    merged_meta = {**old.data.to_dict(), **{k: v for k, v in data.to_dict().items() if v is not None}}
    merged_meta["tags"] = list(dict.fromkeys((old.data.get("tags") or []) + (data.tags or [])))
    merged_text = merge_sections(old.text, card.text, keep)
    return ModelCard(f"---\n{ModelCardData(**merged_meta).to_yaml()}\n---\n{merged_text}")
