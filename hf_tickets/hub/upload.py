"""Push tickets and sparse checkpoints: every push is one commit (``HfApi.create_commit``) of the files
written to a temporary folder: the ticket, optionally the pruned model and its tokenizer, a model card
(``README.md``, updated in place when the repo already has one), the sparsity-versus-score plot and
the per-round results as JSON.

A folder holding model weights is a sparse-model repo: it must hold the tokenizer too, since without
one ``AutoTokenizer.from_pretrained(repo)`` silently builds a tokenizer of a handful of special
tokens, and ``pipeline(task, model=repo)`` runs with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, constants

from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket
from hf_tickets.hub.cards import RESULTS_FILE, fill_repo_id, plot_results, ticket_card, write_results_file
from hf_tickets.hub.hub_api import ALLOW_PATTERNS, CARD_FILE, PLOT_FILE, TicketHubError, api_client, hub_errors
from hf_tickets.hub.sparse_checkpoint import COMPACT_SUFFIX, save_sparse_checkpoint

#: Tokenizer files that are not JSON (WordPiece/BPE vocabularies, sentencepiece models): safe, not pickles.
TOKENIZER_FILES = ["vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model"]
UPLOAD_PATTERNS = ALLOW_PATTERNS + TOKENIZER_FILES
#: What ``save_pretrained`` of any tokenizer or processor writes.
TOKENIZER_MARKERS = ("tokenizer_config.json", "processor_config.json")


def _prepare_repo(api: HfApi, repo_id: str, revision: str | None, private: bool | None) -> None:
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        raise TicketHubError(
            f"cannot push to {repo_id!r} at commit {revision}: commits are immutable, pass a branch name"
        )
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, exist_ok=True)  # starts from main, like `git checkout -b`


def _remote_card(api: HfApi, repo_id: str, revision: str | None, scratch: Path) -> ModelCard | None:
    """The card already in the repo (to update its sections), or None."""
    if CARD_FILE not in {s.rfilename for s in api.model_info(repo_id, revision=revision).siblings or []}:
        return None
    path = api.hf_hub_download(repo_id, CARD_FILE, revision=revision, cache_dir=scratch)
    return ModelCard.load(path, ignore_metadata_errors=True)


def checkpoint_kind(folder: Path) -> str | None:
    """``"compact"``, ``"dense"`` or None (a ticket only) for the weights a folder holds."""
    weights = [p.name for p in folder.glob("*.safetensors") if p.name != MASKS_FILE]
    if any(name.endswith(COMPACT_SUFFIX) for name in weights):
        return "compact"
    return "dense" if weights else None


def model_class_of(folder: Path) -> str | None:
    """The model class ``config.json`` names (``architectures[0]``), if any."""
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or [None]
    except (OSError, ValueError, AttributeError):
        return None
    return architectures[0]


def _check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_MARKERS):
        raise TicketHubError(
            f"{folder} holds a model but no tokenizer ({TOKENIZER_MARKERS[0]} missing): without it "
            "AutoTokenizer.from_pretrained(repo) silently builds a wrong one. Save the model's tokenizer "
            "there (tokenizer.save_pretrained(dir)) or pass tokenizer= to push_sparse_checkpoint"
        )


def _saved_results(path: Path, main_metric: str | None) -> tuple[list, list, str | None]:
    """(rounds, transfer, main metric) from a folder's ``ticket_results.json``, so its card can be regenerated."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return list(record["rounds"]), list(record.get("transfer") or []), main_metric or record.get("main_metric")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TicketHubError(f"{path} is not a results file written by hf_tickets (rounds expected): {err}") from err


def _write_card(
    api: HfApi,
    folder: Path,
    ticket: Ticket,
    repo_id: str,
    revision: str | None,
    *,
    results: Sequence[Mapping] | None,
    transfer: Sequence[Mapping] | None,
    checkpoint: str | None = None,
    model_class: str | None = None,
    main_metric: str | None = None,
) -> None:
    plot_path = PLOT_FILE if results and plot_results(ticket, results, folder / PLOT_FILE, main_metric) else None
    results_file = None
    if results or transfer:
        results_file = write_results_file(folder, ticket, results, transfer, main_metric).name
    with tempfile.TemporaryDirectory() as scratch:
        existing = _remote_card(api, repo_id, revision, Path(scratch))
    card = ticket_card(
        ticket,
        results=results,
        transfer=transfer,
        plot_path=plot_path,
        existing=existing,
        repo_id=repo_id,
        checkpoint=checkpoint,
        model_class=model_class,
        main_metric=main_metric,
        results_file=results_file,
    )
    card.save(folder / CARD_FILE)


def _stage_card(folder: Path, staged: Path, repo_id: str) -> None:
    """The folder's own card, with the repo id filled in where it was written before the repo was known."""
    staged_card = staged / CARD_FILE
    staged_card.unlink()  # a symlink to the original, which stays as it is
    staged_card.write_text(fill_repo_id((folder / CARD_FILE).read_text(encoding="utf-8"), repo_id), encoding="utf-8")


def _commit_folder(
    api: HfApi, folder: Path, repo_id: str, revision: str | None, commit_message: str, commit_description: str | None
) -> CommitInfo:
    files = sorted({p for pattern in UPLOAD_PATTERNS for p in folder.glob(pattern) if not p.name.startswith(".")})
    operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files]
    return api.create_commit(
        repo_id, operations, commit_message=commit_message, commit_description=commit_description, revision=revision
    )


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | None = None,
    create_card: bool = True,
    results: Sequence[Mapping] | None = None,
    transfer: Sequence[Mapping] | None = None,
    checkpoint: str | None = None,
    model_class: str | None = None,
    main_metric: str | None = None,
) -> CommitInfo:
    """Upload a ticket directory (optionally holding a sparse checkpoint and its tokenizer) as one commit.

    Only the folder's top-level safetensors, JSON, Markdown, PNG and tokenizer files are uploaded. A
    folder with model weights must hold its tokenizer (else :class:`TicketHubError`). Without a
    ``README.md`` in the folder (and with ``create_card``) the card is generated: a sparse-model card
    when the folder holds weights (``checkpoint`` and ``model_class`` default to what the folder
    holds), else a ticket card, fed by ``results``/``transfer`` or else by the folder's
    ``ticket_results.json``. A ``README.md`` already there is pushed with ``repo_id`` filled in.
    """
    folder = Path(folder)
    if not (folder / MASKS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise TicketHubError(f"{folder} is not a ticket directory ({MASKS_FILE} and {CONFIG_FILE} expected)")
    checkpoint = checkpoint or checkpoint_kind(folder)
    if checkpoint:
        _check_tokenizer(folder)
    if results is None and transfer is None and (folder / RESULTS_FILE).is_file():
        results, transfer, main_metric = _saved_results(folder / RESULTS_FILE, main_metric)
    # The files are uploaded as they are; the ticket is read back only when a card must be written for it.
    ticket = Ticket.from_pretrained(folder) if create_card and not (folder / CARD_FILE).is_file() else None
    api = api_client(token)
    message = commit_message or f"Upload hf_tickets ticket ({100 * _sparsity(folder, ticket):.1f}% sparse)"
    with hub_errors(repo_id, revision, f"push {folder}"), tempfile.TemporaryDirectory() as staging:
        _prepare_repo(api, repo_id, revision, private)
        staged = Path(staging)
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("."):
                try:
                    os.symlink(path.resolve(), staged / path.name)  # stage without copying large weights
                except OSError:  # no symlinks (some Windows setups): copy
                    shutil.copy2(path, staged / path.name)
        if (folder / CARD_FILE).is_file():
            _stage_card(folder, staged, repo_id)
        elif create_card:
            _write_card(
                api,
                staged,
                ticket,
                repo_id,
                revision,
                results=results,
                transfer=transfer,
                checkpoint=checkpoint,
                model_class=model_class or (model_class_of(folder) if checkpoint else None),
                main_metric=main_metric,
            )
        return _commit_folder(api, staged, repo_id, revision, message, commit_description)


def _sparsity(folder: Path, ticket: Ticket | None) -> float:
    if ticket is not None:
        return ticket.sparsity
    try:
        return float(json.loads((folder / CONFIG_FILE).read_text())["sparsity"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TicketHubError(f"{folder / CONFIG_FILE}: no readable 'sparsity' ({err})") from err


def push_ticket(
    ticket: Ticket,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | None = None,
    create_card: bool = True,
    results: Sequence[Mapping] | None = None,
    transfer: Sequence[Mapping] | None = None,
    main_metric: str | None = None,
) -> CommitInfo:
    """Upload ``ticket`` (masks, config, model card, plot, results JSON) to ``repo_id`` as a ticket repo.

    ``revision`` is the branch to commit to (created if needed); ``results``/``transfer``/``main_metric``
    feed the card (see :func:`hf_tickets.hub.cards.ticket_card`). Returns the commit (``.oid`` pins
    this exact version).
    """
    with tempfile.TemporaryDirectory() as folder:
        ticket.save_pretrained(folder)
        return push_folder(
            folder,
            repo_id,
            revision=revision,
            private=private,
            commit_message=commit_message,
            commit_description=commit_description,
            token=token,
            create_card=create_card,
            results=results,
            transfer=transfer,
            main_metric=main_metric,
        )


def push_sparse_checkpoint(
    model,
    ticket: Ticket,
    repo_id: str,
    *,
    tokenizer=None,
    compact: bool = False,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | None = None,
    create_card: bool = True,
    results: Sequence[Mapping] | None = None,
    transfer: Sequence[Mapping] | None = None,
    main_metric: str | None = None,
) -> CommitInfo:
    """Upload the pruned ``model`` with its ``tokenizer``, ``ticket`` and a card, as one sparse-model repo.

    ``tokenizer`` (a tokenizer or processor: anything with ``save_pretrained``) is required, so
    ``pipeline(task, model=repo_id)`` works. The pruned weights of ``model`` are zeroed in place
    first. By default the weights are a standard ``model.safetensors`` that
    ``AutoModel*.from_pretrained(repo_id)`` loads with transformers alone; with ``compact=True``
    they are ``model.compact.safetensors`` (values + bitmask), which :func:`pull` and
    ``hf-tickets convert`` expand back, bit for bit.
    """
    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        raise TicketHubError(
            f"push_sparse_checkpoint to {repo_id!r} needs tokenizer= (the model's tokenizer or processor): "
            "without one, AutoTokenizer.from_pretrained(repo) silently builds a wrong tokenizer"
        )
    with tempfile.TemporaryDirectory() as folder:
        save_sparse_checkpoint(model, ticket, folder, compact=compact, tokenizer=tokenizer)
        message = commit_message or (
            f"Upload {'compact ' if compact else ''}sparse checkpoint ({100 * ticket.sparsity:.1f}% sparse)"
        )
        return push_folder(
            folder,
            repo_id,
            revision=revision,
            private=private,
            commit_message=message,
            commit_description=commit_description,
            token=token,
            create_card=create_card,
            results=results,
            transfer=transfer,
            checkpoint="compact" if compact else "dense",
            model_class=type(model).__name__,
            main_metric=main_metric,
        )
