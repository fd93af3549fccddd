"""Model cards for the two kinds of repo hf_tickets pushes, built with ``huggingface_hub.ModelCard``.

- A **ticket repo** (``library_name: hf_tickets``): masks + config + card (+ plot), a mask to apply
  to a named base model at a pinned revision.
- A **sparse-model repo**: the pruned model + tokenizer + config + ticket files. In the dense form
  it is a plain transformers model (``library_name: transformers``, tag ``hf_tickets``, the
  ``pipeline_tag`` of its class); the compact form (``library_name: hf_tickets``) says how to expand it.

The body comes from ``templates/ticket_card_template.md`` (the repo's ``model_cards/`` folder).
Every generated section sits between ``<!-- hf_tickets:section:NAME -->`` markers, so a card
regenerated after new results replaces those sections in the existing card: text a person added
outside the markers stays, and nothing is duplicated. Sections whose data is not given this time
(``results=None``, ``transfer=None``) keep what the existing card says; sections with nothing to
show are left out.

What a card reports comes from the ticket's ``config.provenance``, recorded by whoever found it:
``main_metric`` (e.g. ``"accuracy"``), ``task_type`` (a Hub pipeline tag), and for the
``model-index`` a Hub dataset: ``dataset`` (its Hub id; leave it out for local files),
``dataset_name``, ``dataset_config``, ``dataset_split``, ``dataset_revision``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers.models.auto import modeling_auto

from hf_tickets.core.atomic_files import atomic_write_json
from hf_tickets.core.provenance import is_hub_repo_id
from hf_tickets.core.structured import STRUCTURED_STRATEGIES
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket
from hf_tickets.core.version import __version__
from hf_tickets.training.results import is_metric, metric_names

TEMPLATE_PATH = Path(__file__).parent / "templates" / "ticket_card_template.md"
TAGS = ["lottery-ticket", "pruning", "sparse"]
LIBRARY_TAG = "hf_tickets"
#: Where a card's usage code names its repo until the repo id is known (``hf-tickets push`` fills it in).
REPO_PLACEHOLDER = "<this repo>"
#: The per-round series and every logged number (train time, steps...), beside the card in the repo.
RESULTS_FILE = "ticket_results.json"
SECTION_RE = re.compile(r"<!-- hf_tickets:section:(\w+) -->.*?<!-- /hf_tickets:section:\1 -->", re.DOTALL)
UNKNOWN_BASE = "unknown (loaded from a local directory)"
# Metadata a regenerated card always sets from its own data (a pushed compact form drops a dense pipeline_tag).
_OWNED_METADATA = {"library_name", "pipeline_tag", "base_model", "datasets"}
# Provenance keys the card shows elsewhere (metadata, model-index) or that are scores.
_NOT_HOW_FOUND = {"metrics", "main_metric", "task_type", "dataset", "dataset_name", "dataset_config", "dataset_split"}
# (pipeline tag, Auto class, transformers' name mapping of the classes that do the task), most specific first.
_MODEL_TASKS = (
    ("fill-mask", "AutoModelForMaskedLM", modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
    (
        "text-classification",
        "AutoModelForSequenceClassification",
        modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    ),
    ("question-answering", "AutoModelForQuestionAnswering", modeling_auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES),
    (
        "token-classification",
        "AutoModelForTokenClassification",
        modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    ),
    ("text-generation", "AutoModelForCausalLM", modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
    ("feature-extraction", "AutoModel", modeling_auto.MODEL_MAPPING_NAMES),
)
_AUTO_CLASS = {tag: auto for tag, auto, _ in _MODEL_TASKS}


def model_task(model_class: str | None) -> tuple[str | None, str]:
    """(Hub ``pipeline_tag``, Auto class) of a transformers model class name, e.g. ``BertForMaskedLM``."""
    for tag, auto_class, names in _MODEL_TASKS:
        for value in names.values():
            if model_class in ((value,) if isinstance(value, str) else tuple(value)):
                return tag, auto_class
    return None, "AutoModel"


def format_number(value: Any) -> str:
    """A number as a person reads it: scores to 4 decimals, counts and large totals with separators."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.4g}"
    return str(value)


def _fmt(value: Any) -> str:
    """A table cell: numbers formatted, local paths reduced to their file name, pipes escaped."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return format_number(value)
    if isinstance(value, (dict, list, tuple)):
        return "`" + json.dumps(_without_paths(value), default=str) + "`"
    return str(_without_paths(value)).replace("|", "\\|").replace("\n", " ")


def _without_paths(value: Any) -> Any:
    """``value`` with absolute/home paths replaced by their last component (paths mean nothing elsewhere)."""
    if isinstance(value, str) and (value.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        return "local file " + re.split(r"[/\\]", value.rstrip("/\\"))[-1]
    if isinstance(value, Mapping):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_paths(v) for v in value]
    return value


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def primary_metric(results: Sequence[Mapping], main_metric: str | None = None) -> str | None:
    """The headline score: ``main_metric`` (with or without ``eval_``) when logged, else the first non-loss score."""
    names = metric_names(results)
    if main_metric:
        for candidate in (main_metric, f"eval_{main_metric}"):
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


def plot_results(
    ticket: Ticket, results: Sequence[Mapping], out_png: str | Path, main_metric: str | None = None
) -> Path | None:
    """The sparsity-versus-score PNG of the ticket's headline metric (None if no round has it)."""
    from hf_tickets.hub.plots import plot_sparsity_vs_score, split_results  # matplotlib only when a plot is made

    metric = primary_metric(results, main_metric or ticket.config.provenance.get("main_metric"))
    if metric is None or not split_results(results, metric)[0]:
        return None
    full, std = full_model_score(results, metric)
    return plot_sparsity_vs_score(results, metric, out_png, full_score=full, full_std=std)


def results_record(
    ticket: Ticket,
    results: Sequence[Mapping] | None,
    transfer: Sequence[Mapping] | None = None,
    main_metric: str | None = None,
) -> dict[str, Any]:
    """What :data:`RESULTS_FILE` holds: the per-round rows as logged (bookkeeping included) and the headline."""
    metric = primary_metric(results or [], main_metric or ticket.config.provenance.get("main_metric"))
    full, std = full_model_score(results or [], metric) if metric else (None, None)
    return {
        "main_metric": metric,
        "full_model": {"score": full, "std": std},
        "ticket_sparsity": ticket.sparsity,
        "rounds": [dict(r) for r in results or []],
        "transfer": [dict(t) for t in transfer or []],
    }


def write_results_file(
    folder: str | Path,
    ticket: Ticket,
    results: Sequence[Mapping] | None,
    transfer: Sequence[Mapping] | None = None,
    main_metric: str | None = None,
) -> Path:
    """``folder/ticket_results.json``: :func:`results_record`, for the repo beside the card."""
    return atomic_write_json(Path(folder) / RESULTS_FILE, results_record(ticket, results, transfer, main_metric))


def _metrics_at_ticket(ticket: Ticket, results: Sequence[Mapping] | None) -> dict[str, float]:
    """The scores this ticket reached: ``provenance["metrics"]``, else the results row at its sparsity."""
    recorded = ticket.config.provenance.get("metrics")
    if isinstance(recorded, Mapping) and recorded:
        return {k: float(v) for k, v in recorded.items() if is_metric(k, v)}
    rows = [r for r in results or [] if not r.get("baseline") and "sparsity" in r]
    if not rows:
        return {}
    row = min(rows, key=lambda r: abs(float(r["sparsity"]) - ticket.sparsity))
    if abs(float(row["sparsity"]) - ticket.sparsity) > 0.005:
        return {}
    return {name: float(row[name]) for name in metric_names([row])}


def _eval_results(ticket: Ticket, results, task_type: str | None, main_metric: str | None) -> list[EvalResult]:
    """The ``model-index``: this ticket's scores on a Hub dataset the caller named (never a guess)."""
    provenance = ticket.config.provenance
    dataset = provenance.get("dataset")
    if not task_type or not is_hub_repo_id(dataset):
        return []
    scores = _metrics_at_ticket(ticket, results)
    headline = primary_metric([scores], main_metric or provenance.get("main_metric"))
    # Losses are reported only when nothing else was measured (MLM perplexity runs log the loss).
    names = [n for n in scores if n == headline or "loss" not in n]
    names.sort(key=lambda n: n != headline)
    return [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset,
            dataset_name=provenance.get("dataset_name") or dataset,
            dataset_config=provenance.get("dataset_config"),
            dataset_split=provenance.get("dataset_split"),
            dataset_revision=provenance.get("dataset_revision"),
            metric_type=name.removeprefix("eval_"),
            metric_value=scores[name],
            metric_name=name.removeprefix("eval_").replace("_", " "),
        )
        for name in names
    ]


def _kind(checkpoint: str | None) -> str:
    if checkpoint not in (None, "dense", "compact"):
        raise ValueError(f"checkpoint must be None, 'dense' or 'compact', not {checkpoint!r}")
    return checkpoint or "ticket"


def card_data(
    ticket: Ticket,
    results: Sequence[Mapping] | None = None,
    title: str | None = None,
    *,
    checkpoint: str | None = None,
    model_class: str | None = None,
    main_metric: str | None = None,
) -> ModelCardData:
    """YAML metadata for a ticket repo (``checkpoint=None``) or a sparse-model repo (``"dense"``/``"compact"``)."""
    config, kind = ticket.config, _kind(checkpoint)
    pipeline_tag = model_task(model_class)[0] if kind != "ticket" else None
    task_type = pipeline_tag or config.provenance.get("task_type")
    eval_results = _eval_results(ticket, results, task_type, main_metric)
    dataset = config.provenance.get("dataset")
    tags = ([LIBRARY_TAG] if kind != "ticket" else []) + TAGS + [t for t in [config.model_type] if t]
    return ModelCardData(
        library_name="transformers" if kind == "dense" else LIBRARY_TAG,
        pipeline_tag=pipeline_tag if kind == "dense" else None,
        base_model=config.base_model if is_hub_repo_id(config.base_model) else None,
        tags=tags,
        datasets=[dataset] if is_hub_repo_id(dataset) else None,
        eval_results=eval_results or None,
        model_name=title if eval_results else None,
    )


def _base_reference(ticket: Ticket) -> tuple[str | None, str]:
    """(repo id or None, the base model as a person reads it: ``org/name@sha`` or "unknown ...")."""
    base = ticket.config.base_model if is_hub_repo_id(ticket.config.base_model) else None
    if base is None:
        return None, UNKNOWN_BASE
    revision = ticket.config.base_model_revision
    return base, f"{base}@{revision[:12]}" if revision else base


def _usage(ticket: Ticket, repo_id: str | None, kind: str, model_class: str | None) -> tuple[str, str, str]:
    repo = repo_id or REPO_PLACEHOLDER
    pipeline_tag, auto_class = model_task(model_class)
    if kind == "compact":
        intro = (
            "The weights are stored compactly (surviving values + a bitmask), which transformers cannot read "
            "by itself: expand them once with hf_tickets (bit for bit), then load the folder with transformers:"
        )
        code = (
            f"pip install hf-tickets\nhf-tickets pull {repo} ./sparse-model   # writes model.safetensors\n"
            f"python -c \"from transformers import {auto_class}; {auto_class}.from_pretrained('./sparse-model')\""
        )
        return intro, "bash", code
    if kind == "dense":
        intro = (
            "A standard transformers checkpoint (pruned weights are stored as zeros), with its tokenizer: "
            "no hf_tickets needed. The ticket files beside it (`ticket_masks.safetensors`, `ticket_config.json`) "
            f'let hf_tickets keep it sparse while fine-tuning further (`Ticket.from_pretrained("{repo}")`).'
        )
        lines = [f"from transformers import {auto_class}" + (", pipeline" if pipeline_tag else ""), ""]
        if pipeline_tag:
            lines.append(f'pipe = pipeline("{pipeline_tag}", model="{repo}")')
        lines.append(f'model = {auto_class}.from_pretrained("{repo}")')
        return intro, "python", "\n".join(lines)
    auto_class = _AUTO_CLASS.get(ticket.config.provenance.get("task_type"), "AutoModelForSequenceClassification")
    base, _ = _base_reference(ticket)
    revision = ticket.config.base_model_revision
    if base is None:
        intro = (
            "The base model this ticket was found on was loaded from a local directory, so its Hub origin is "
            "unknown. Load the same weights yourself: `apply` checks them against the ticket's fingerprint."
        )
        load = f'model = {auto_class}.from_pretrained("path/to/the/base/model")  # origin unknown'
    else:
        intro = (
            f"Apply the ticket to its base model, `{base}`"
            + (" at the revision it was found on" if revision else "")
            + " (any head: the masks are relative to the base model), then fine-tune as usual:"
        )
        load = f'model = {auto_class}.from_pretrained("{base}"' + (f', revision="{revision}"' if revision else "") + ")"
    code = (
        f"from transformers import {auto_class}\nfrom hf_tickets import Ticket\n\n"
        f'ticket = Ticket.from_pretrained("{repo}")\n{load}\n'
        "ticket.apply(model)  # zeroes the pruned weights; refuses a model that is not the ticket's base"
    )
    return intro, "python", code


def _result_values(ticket, results, main_metric) -> dict[str, Any]:
    if not results:
        return {"result_rows": []}
    metric = primary_metric(results, main_metric or ticket.config.provenance.get("main_metric"))
    names = [n for n in [metric] if n] + [n for n in metric_names(results) if n != metric]
    full, std = full_model_score(results, metric) if metric else (None, None)
    ordered = sorted(results, key=lambda r: (str(r.get("baseline") or ""), float(r.get("sparsity", 0))))
    return {
        "metric": metric,
        "result_metrics": names,
        "full_score": None if full is None else format_number(full) + (f" ± {format_number(std)}" if std else ""),
        "result_rows": [
            {
                "kind": _fmt(r.get("baseline") or "ticket (IMP)"),
                "round": _fmt(r.get("round")),
                "sparsity": _pct(float(r["sparsity"])) if "sparsity" in r else "",
                "values": [_fmt(r.get(n)) for n in names],
            }
            for r in ordered
        ],
    }


def _shrink_command(repo: str, kind: str, base: str | None) -> str:
    if kind != "ticket":  # the fine-tuned weights are the repo's: shrink the pulled folder, not the base model
        return f"hf-tickets pull {repo} ./sparse-model\nhf-tickets shrink ./sparse-model ./smaller-model"
    # a ticket repo holds no weights: shrink applies it to its base model (named, or the user's)
    return f"hf-tickets shrink {repo} ./smaller-model" + ("" if base else " --model path/to/the/base/model")


def _structured_values(ticket: Ticket, repo_id: str | None, kind: str, speed: Mapping | None) -> dict | None:
    """The card's shrink section: for a ticket whose strategy prunes whole heads/neurons, or given ``speed``."""
    if ticket.config.strategy not in STRUCTURED_STRATEGIES and not speed:
        return None
    kinds = STRUCTURED_STRATEGIES.get(ticket.config.strategy, (("head", "neuron"), False))[0]
    base, _ = _base_reference(ticket)
    speed = speed or {}
    return {
        "units": " and ".join({"head": "attention heads", "neuron": "FFN neurons"}[k] for k in kinds),
        "command": _shrink_command(repo_id or REPO_PLACEHOLDER, kind, base),
        "plot_path": speed.get("plot_path"),
        "where": speed.get("where", "CPU"),
        "shape": speed.get("shape", ""),
        "metric": speed.get("metric", "score"),
        "rows": [
            {
                "sparsity": _pct(float(r["sparsity"])),
                "score": _fmt(r.get("score")),
                "matching": {True: "yes", False: "no"}.get(r.get("matching"), ""),
                "speedup": f"{float(r['speedup']):.2f}×" if r.get("speedup") else "",
            }
            for r in speed.get("rows", [])
        ],
    }


def _transfer_summary(transfer: Sequence[Mapping]) -> str:
    """How many targets the ticket matched on, of those where matching could be judged (``matching`` not None)."""
    judged = [t for t in transfer if isinstance(t.get("matching"), bool)]
    if not judged:
        return ""
    return f"Matching on {sum(t['matching'] for t in judged)} of {len(judged)} tasks where it could be judged."


def _template_values(
    ticket, results, transfer, plot_path, repo_id, kind, model_class, main_metric, results_file, speed=None
):
    config = ticket.config
    base, base_text = _base_reference(ticket)
    what = {"ticket": "Lottery ticket", "dense": "Sparse model", "compact": "Sparse model (compact)"}[kind]
    title = f"{what} for {base or 'a base model of unknown origin'} ({_pct(ticket.sparsity)} sparse)"
    how_found = [("Strategy", config.strategy), ("Targets", _fmt(config.targets)), ("Sparsity", _pct(ticket.sparsity))]
    how_found += [
        (key.replace("_", " ").capitalize(), _fmt(v))
        for key, v in config.provenance.items()
        if key not in _NOT_HOW_FOUND and v not in (None, "", [], {})
    ]
    summary = {
        "ticket": "A lottery ticket: a pruning mask for the base model above, to apply before fine-tuning.",
        "dense": "The pruned model itself, loadable with transformers alone; the mask that pruned it is beside it.",
        "compact": "The pruned model in hf_tickets' compact form (see Usage to expand it), with its mask.",
    }[kind]
    usage_intro, usage_language, usage = _usage(ticket, repo_id, kind, model_class)
    return {
        **_result_values(ticket, results, main_metric),
        "title": title,
        "summary": f"{summary} Base model: `{base_text}`. Found and shared with "
        "[hf_tickets](https://pypi.org/project/hf-tickets/).",
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
        "results_file": results_file,
        "structured": _structured_values(ticket, repo_id, kind, speed),
        "transfer_rows": [
            {
                "source": _fmt(t.get("source")),
                "task": _fmt(t.get("task")),
                "metric": _fmt(t.get("metric")),
                "score": _fmt(t.get("score")),
                "full_score": _fmt(t.get("full_score")),
                "matching": t.get("verdict") or {True: "yes", False: "no"}.get(t.get("matching"), ""),
            }
            for t in transfer or []
        ],
        "transfer_summary": _transfer_summary(transfer or []),
        "usage_intro": usage_intro,
        "usage_language": usage_language,
        "usage": usage,
        "files": [MASKS_FILE, CONFIG_FILE],
        "provenance": [
            ("hf_tickets version (found with)", config.hf_tickets_version),
            ("hf_tickets version (card)", __version__),
            ("Base model", base or UNKNOWN_BASE),
            ("Base model revision", config.base_model_revision if base and config.base_model_revision else "unknown"),
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


def fill_repo_id(card_text: str, repo_id: str) -> str:
    """A card written before its repo was known (by a recipe), with ``repo_id`` in place of the placeholder."""
    return card_text.replace(REPO_PLACEHOLDER, repo_id)


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
    main_metric: str | None = None,
    results_file: str | None = None,
    speed: Mapping | None = None,
) -> ModelCard:
    """The model card of a ticket repo, or of a sparse-model repo (``checkpoint="dense"``/``"compact"``).

    ``results``: IMP rounds (dicts with ``round``, ``sparsity``, metrics, optional ``baseline`` and
    ``full_score``); ``transfer``: dicts with ``source, task, metric, score, full_score, matching`` (None: could not be
    judged) and an optional ``verdict`` text shown instead of yes / no;
    ``plot_path``: where the card links the sparsity-versus-score PNG (relative to the repo);
    ``existing``: a previous card (object or text) whose sections are updated in place;
    ``repo_id``: for the usage code (else a placeholder that :func:`fill_repo_id` replaces);
    ``model_class``: the sparse model's class name (``BertForSequenceClassification``), which sets
    the ``pipeline_tag``; ``main_metric``: the headline score (default: ``provenance["main_metric"]``,
    else the first non-loss score logged); ``results_file``: the repo file holding every logged number
    (written by :func:`write_results_file`), which the card then points to. ``speed`` (structured tickets):
    ``{"rows": [{sparsity, score, matching, speedup}], "metric", "shape", "where", "plot_path"}``, the
    speed-up of each shrunk ticket over the dense model beside its score; a structured ticket's card says
    how to shrink it with or without it.
    """
    kind = _kind(checkpoint)
    values = _template_values(
        ticket, results, transfer, plot_path, repo_id, kind, model_class, main_metric, results_file, speed
    )
    data = card_data(
        ticket, results, title=values["title"], checkpoint=checkpoint, model_class=model_class, main_metric=main_metric
    )
    card = ModelCard.from_template(data, template_path=str(TEMPLATE_PATH), **values)
    if existing is None:
        return card

    old = existing if isinstance(existing, ModelCard) else ModelCard(str(existing), ignore_metadata_errors=True)
    keep = {name for name, given in (("results", results), ("transfer", transfer), ("structured", speed)) if not given}
    # What kind of repo this is (and where it came from) is the new card's to say, even where it says nothing;
    # the model-index is rebuilt from new results, never left from an older card. A person's keys stay.
    owned = _OWNED_METADATA | ({"model-index"} if results else set())
    old_meta = {k: v for k, v in old.data.to_dict().items() if k not in owned}
    merged_meta = {**old_meta, **{k: v for k, v in data.to_dict().items() if v is not None}}
    merged_meta["tags"] = list(dict.fromkeys((old.data.get("tags") or []) + (data.tags or [])))
    merged_text = merge_sections(old.text, card.text, keep)
    return ModelCard(f"---\n{ModelCardData(**merged_meta).to_yaml()}\n---\n{merged_text}")
