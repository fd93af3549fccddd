"""Push tickets and sparse checkpoints: every push is one commit (``HfApi.create_commit``) of the files
written to a temporary folder: the ticket, optionally the pruned model, a model card (``README.md``,
updated in place when the repo already has one) and the sparsity-versus-score plot.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, constants

from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket
from hf_tickets.hub.hub_api import ALLOW_PATTERNS, CARD_FILE, PLOT_FILE, TicketHubError, api_client, hub_errors


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
) -> None:
    from hf_tickets.hub.cards import plot_results, ticket_card

    plot_path = PLOT_FILE if results and plot_results(ticket, results, folder / PLOT_FILE) else None
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
    )
    card.save(folder / CARD_FILE)


def _commit_folder(
    api: HfApi, folder: Path, repo_id: str, revision: str | None, commit_message: str, commit_description: str | None
) -> CommitInfo:
    files = sorted(p for pattern in ALLOW_PATTERNS for p in folder.glob(pattern) if not p.name.startswith("."))
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
) -> CommitInfo:
    """Upload a ticket directory (optionally holding a sparse checkpoint) as one commit.

    Only the folder's top-level safetensors, JSON, Markdown and PNG files are uploaded. Without a
    ``README.md`` in the folder (and with ``create_card``), the card is generated from the ticket.
    """
    folder = Path(folder)
    if not (folder / MASKS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise TicketHubError(f"{folder} is not a ticket directory ({MASKS_FILE} and {CONFIG_FILE} expected)")
    ticket = Ticket.from_pretrained(folder)
    api = api_client(token)
    message = commit_message or f"Upload hf_tickets ticket ({100 * ticket.sparsity:.1f}% sparse)"
    with hub_errors(repo_id, revision, f"push {folder}"), tempfile.TemporaryDirectory() as staging:
        _prepare_repo(api, repo_id, revision, private)
        staged = Path(staging)
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("."):
                try:
                    os.symlink(path.resolve(), staged / path.name)  # stage without copying large weights
                except OSError:  # no symlinks (some Windows setups): copy
                    shutil.copy2(path, staged / path.name)
        if create_card and not (folder / CARD_FILE).is_file():
            _write_card(
                api,
                staged,
                ticket,
                repo_id,
                revision,
                results=results,
                transfer=transfer,
                checkpoint=checkpoint,
                model_class=model_class,
            )
        return _commit_folder(api, staged, repo_id, revision, message, commit_description)


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
) -> CommitInfo:
    """Upload ``ticket`` (masks, config, model card, plot) to ``repo_id``, creating the repo/branch if needed.

    ``revision`` is the branch to commit to; ``results``/``transfer`` feed the card (see
    :func:`hf_tickets.hub.cards.ticket_card`). Returns the commit (``.oid`` pins this exact version).
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
        )


def push_sparse_checkpoint(
    model,
    ticket: Ticket,
    repo_id: str,
    *,
    compact: bool = False,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | None = None,
    create_card: bool = True,
    results: Sequence[Mapping] | None = None,
    transfer: Sequence[Mapping] | None = None,
) -> CommitInfo:
    """Upload the pruned ``model`` with ``ticket`` and a card, as one commit.

    The pruned weights of ``model`` are zeroed in place first. By default the weights are a
    standard ``model.safetensors`` that ``AutoModel*.from_pretrained(repo_id)`` loads; with
    ``compact=True`` they are ``model.compact.safetensors`` (values + bitmask), which
    :func:`pull` and ``hf-tickets convert`` expand back, bit for bit.
    """
    from hf_tickets.hub.sparse_checkpoint import save_sparse_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        save_sparse_checkpoint(model, ticket, folder, compact=compact)
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
        )
