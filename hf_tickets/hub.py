"""Share tickets and sparse checkpoints through the Hugging Face Hub (``huggingface_hub`` client).

- Every push is one commit (``HfApi.create_commit``) of the files written to a temporary folder:
  the ticket, optionally the pruned model, a model card (``README.md``, updated in place when the
  repo already has one) and the sparsity-versus-score plot.
- Downloads fetch only ``*.safetensors``, ``*.json``, ``*.md`` and ``*.png``: nothing pickled is
  downloaded, let alone loaded, and every safetensors file is checked before it is used.
  ``revision`` pins a branch, tag or commit sha.
- The Hub endpoint is ``HF_ENDPOINT`` read at call time (``huggingface_hub`` reads it once, at
  import), so a mirror or a local test Hub set up after import is honoured too.
- Failures raise :class:`TicketHubError` naming the repo, revision and file; the Hub's typed error
  (``RepositoryNotFoundError``, ``RevisionNotFoundError``, ...) is its ``__cause__``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open

from . import __version__
from .errors import TicketError
from .ticket import CONFIG_FILE, MASKS_FILE, Ticket

ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.png"]
CARD_FILE = "README.md"
PLOT_FILE = "sparsity_vs_score.png"


class TicketHubError(TicketError):
    """A Hub repository, revision or file cannot be used; the message names which and why."""


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _api(token: str | None = None) -> HfApi:
    return HfApi(endpoint=hub_endpoint(), token=token, library_name="hf_tickets", library_version=__version__)


def _where(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r} (revision {revision or constants.DEFAULT_REVISION!r}) on {hub_endpoint()}"


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, what: str) -> Iterator[None]:
    """Re-raise the Hub's errors as :class:`TicketHubError` with a sentence a user can act on."""
    try:
        yield
    except RevisionNotFoundError as err:
        raise TicketHubError(
            f"cannot {what}: revision {revision!r} does not exist in {repo_id!r} on {hub_endpoint()} "
            "(expected a branch, a tag or a commit sha)"
        ) from err
    except RepositoryNotFoundError as err:
        raise TicketHubError(
            f"cannot {what}: repository {repo_id!r} was not found on {hub_endpoint()} "
            "(check the name; for a private repo log in or pass token=)"
        ) from err
    except LocalEntryNotFoundError as err:
        raise TicketHubError(f"cannot {what}: the Hub at {hub_endpoint()} could not be reached and no copy is cached") from err
    except EntryNotFoundError as err:
        raise TicketHubError(f"cannot {what}: a file is missing from {_where(repo_id, revision)}: {err}") from err
    except HFValidationError as err:
        raise TicketHubError(f"cannot {what}: {repo_id!r} is not a valid repo id: {err}") from err
    except HfHubHTTPError as err:
        raise TicketHubError(f"cannot {what}: the Hub refused a request about {_where(repo_id, revision)}: {err}") from err


def check_files(directory: str | Path, repo_id: str, revision: str | None) -> None:
    """Parse every downloaded JSON file and safetensors header, so a broken one is named with its repo."""
    for path in sorted(Path(directory).rglob("*")):
        if ".cache" in path.relative_to(directory).parts:  # huggingface_hub's own bookkeeping in local_dir
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    f.keys()
            else:
                continue
        except (SafetensorError, OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
            kind = "JSON" if path.suffix == ".json" else "safetensors"
            raise TicketHubError(
                f"{path.name} in {_where(repo_id, revision)} is not a valid {kind} file "
                f"(corrupt or truncated upload?): {err}"
            ) from err


# ---------------------------------------------------------------------------------- upload
def _prepare_repo(api: HfApi, repo_id: str, revision: str | None, private: bool | None) -> None:
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        raise TicketHubError(f"cannot push to {repo_id!r} at commit {revision}: commits are immutable, pass a branch name")
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
    from .cards import plot_results, ticket_card

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
    api = _api(token)
    message = commit_message or f"Upload hf_tickets ticket ({100 * ticket.sparsity:.1f}% sparse)"
    with _hub_errors(repo_id, revision, f"push {folder}"), tempfile.TemporaryDirectory() as staging:
        _prepare_repo(api, repo_id, revision, private)
        staged = Path(staging)
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("."):
                try:
                    os.symlink(path.resolve(), staged / path.name)  # stage without copying large weights
                except OSError:  # no symlinks (some Windows setups): copy
                    shutil.copy2(path, staged / path.name)
        if create_card and not (folder / CARD_FILE).is_file():
            _write_card(api, staged, ticket, repo_id, revision, results=results, transfer=transfer,
                        checkpoint=checkpoint, model_class=model_class)
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
    :func:`hf_tickets.cards.ticket_card`). Returns the commit (``.oid`` pins this exact version).
    """
    with tempfile.TemporaryDirectory() as folder:
        ticket.save_pretrained(folder)
        return push_folder(
            folder, repo_id, revision=revision, private=private, commit_message=commit_message,
            commit_description=commit_description, token=token, create_card=create_card,
            results=results, transfer=transfer,
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
    from .sparse_checkpoint import save_sparse_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        save_sparse_checkpoint(model, ticket, folder, compact=compact)
        message = commit_message or (
            f"Upload {'compact ' if compact else ''}sparse checkpoint ({100 * ticket.sparsity:.1f}% sparse)"
        )
        return push_folder(
            folder, repo_id, revision=revision, private=private, commit_message=message,
            commit_description=commit_description, token=token, create_card=create_card, results=results,
            transfer=transfer, checkpoint="compact" if compact else "dense", model_class=type(model).__name__,
        )


# -------------------------------------------------------------------------------- download
def download_ticket(
    repo_id: str, *, revision: str | None = None, token: str | None = None, cache_dir: str | None = None
) -> str:
    """Download a ticket repo's safe files into the Hub cache; returns the local snapshot directory."""
    with _hub_errors(repo_id, revision, "download the ticket"):
        directory = _api(token).snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=ALLOW_PATTERNS
        )
    for required in (MASKS_FILE, CONFIG_FILE):
        if not (Path(directory) / required).is_file():
            raise TicketHubError(f"{_where(repo_id, revision)} holds no hf_tickets ticket: {required} is missing")
    check_files(directory, repo_id, revision)
    return directory


def pull(repo_id: str, local_dir: str | Path, revision: str | None = None, token: str | None = None) -> Path:
    """Download a ticket or sparse-checkpoint repo into ``local_dir`` (safe files only).

    A compact checkpoint is expanded next to itself into ``model.safetensors``, so
    ``AutoModel*.from_pretrained(local_dir)`` works whichever form the repo holds.
    """
    from .sparse_checkpoint import COMPACT_SUFFIX, convert

    with _hub_errors(repo_id, revision, f"pull into {local_dir}"):
        directory = Path(
            _api(token).snapshot_download(
                repo_id, revision=revision, local_dir=local_dir, allow_patterns=ALLOW_PATTERNS
            )
        )
    check_files(directory, repo_id, revision)
    if any(p.name.endswith(COMPACT_SUFFIX) for p in directory.glob("*.safetensors")):
        convert(directory, directory, "dense")
    return directory


# -------------------------------------------------------------------------------------- CLI
def register_cli(subparsers) -> None:
    push = subparsers.add_parser(
        "push",
        help="upload a ticket directory (and any sparse checkpoint in it) to the Hub",
        description="Upload DIR's ticket files, safetensors weights, JSON, Markdown and PNG files to REPO_ID as "
        "one commit; a model card is generated unless DIR has a README.md.",
    )
    push.add_argument("dir", metavar="DIR")
    push.add_argument("repo_id", metavar="REPO_ID")
    push.add_argument("--revision", help="branch to commit to (created from main if missing)")
    push.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    push.add_argument("--commit-message")
    push.add_argument("--no-card", dest="create_card", action="store_false", help="do not generate a model card")
    push.set_defaults(func=_cli_push)

    pull_parser = subparsers.add_parser(
        "pull",
        help="download a ticket or sparse checkpoint repo (safetensors/JSON/Markdown/PNG only)",
        description="Download REPO_ID into DIR; a compact checkpoint is expanded to model.safetensors.",
    )
    pull_parser.add_argument("repo_id", metavar="REPO_ID")
    pull_parser.add_argument("dir", metavar="DIR")
    pull_parser.add_argument("--revision", help="branch, tag or commit sha to download (default: main)")
    pull_parser.set_defaults(func=_cli_pull)


def _cli_push(args) -> int:
    info = push_folder(
        args.dir, args.repo_id, revision=args.revision, private=args.private,
        commit_message=args.commit_message, create_card=args.create_card,
    )
    print(f"pushed {args.dir} to {args.repo_id}: commit {info.oid} ({info.commit_url})")
    return 0


def _cli_pull(args) -> int:
    directory = pull(args.repo_id, args.dir, revision=args.revision)
    print(f"pulled {args.repo_id}{'@' + args.revision if args.revision else ''} into {directory}")
    return 0
