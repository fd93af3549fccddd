"""Download tickets and sparse checkpoints: exact top-level file names of safe types only (safetensors,
JSON, Markdown, PNG), each checked before use; nothing pickled is downloaded, let alone loaded.
``revision`` pins a branch, tag or sha.

A pull lists the repo's files at one commit, refuses a listing with names that could escape the
target folder, downloads the plain top-level files one by one into a fresh folder beside DIR,
verifies them (file types, the ticket's checksums, a compact checkpoint's sizes against its
config), and only then moves them into DIR. Nothing from the repo (such as a ``.cache/huggingface``
tree that ``huggingface_hub`` would trust in DIR) is ever downloaded beyond those names, a failed
pull leaves DIR as it was, and files in DIR that the last pull did not write are not overwritten
without ``force=True``. ``.hf_tickets-pull.json`` in DIR records what the last pull wrote.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub.errors import RemoteEntryNotFoundError

from hf_tickets.core.atomic_files import atomic_write_json, current_umask, sha256_of
from hf_tickets.core.errors import TicketError
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket
from hf_tickets.hub.hub_api import (
    TicketHubError,
    api_client,
    check_files,
    describe_repo,
    hub_errors,
    is_downloadable,
    is_escaping_name,
)
from hf_tickets.hub.sparse_checkpoint import COMPACT_SUFFIX, MODEL_CONFIG_FILE, convert

logger = logging.getLogger(__name__)

TICKET_FILES = (MASKS_FILE, CONFIG_FILE)
PULL_MANIFEST = ".hf_tickets-pull.json"


def download_ticket(
    repo_id: str, *, revision: str | None = None, token: str | None = None, cache_dir: str | None = None
) -> str:
    """Download a ticket's two files (exact names, one commit) into the Hub cache; returns their directory."""
    api = api_client(token)
    paths = []
    with hub_errors(repo_id, revision, "download the ticket"):
        for name in TICKET_FILES:
            try:
                paths.append(Path(api.hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir)))
            except RemoteEntryNotFoundError as err:
                raise TicketHubError(
                    f"{describe_repo(repo_id, revision)} holds no hf_tickets ticket: {name} is missing"
                ) from err
            # The second file comes from the commit the first one resolved to (the snapshot folder's name).
            revision = paths[0].parent.name
    if paths[0].parent != paths[1].parent:
        raise TicketHubError(f"{describe_repo(repo_id, revision)}: the ticket files resolved to different commits")
    check_files(paths[0].parent, repo_id, revision, list(TICKET_FILES))
    return str(paths[0].parent)


def _select_files(repo_id: str, revision: str, names: list[str]) -> list[str]:
    escaping = [n for n in names if is_escaping_name(n)]
    if escaping:
        raise TicketHubError(
            f"{describe_repo(repo_id, revision)} lists file names that could write outside the target folder "
            f"({escaping[:3]}); refusing to pull from it"
        )
    chosen = sorted(n for n in names if is_downloadable(n))
    skipped = [n for n in names if n not in chosen]
    if skipped:
        logger.info(
            "pull %s: not downloading %d file(s) of other types or in subfolders: %s",
            repo_id,
            len(skipped),
            skipped[:5],
        )
    missing = [n for n in TICKET_FILES if n not in chosen]
    if missing:
        raise TicketHubError(f"{describe_repo(repo_id, revision)} holds no hf_tickets ticket: {missing[0]} is missing")
    return chosen


def _verify(staging: Path, names: list[str], repo_id: str, revision: str) -> list[str]:
    """Check every downloaded file; expand a compact checkpoint. Returns the names DIR will receive."""
    check_files(staging, repo_id, revision, names)
    where = f" in {describe_repo(repo_id, revision)}"
    try:
        Ticket.from_pretrained(staging)
        if any(n.endswith(COMPACT_SUFFIX) for n in names):
            if MODEL_CONFIG_FILE not in names:
                raise TicketError(f"a compact checkpoint without its {MODEL_CONFIG_FILE} cannot be checked or expanded")
            written = convert(staging, staging, "dense", in_place=True)
            names = sorted(set(names) | {p.name for p in written})
    except TicketHubError:
        raise
    except TicketError as err:
        raise TicketHubError(f"{str(err).replace(str(staging) + os.sep, '')}{where}") from err
    return names


def _read_manifest(directory: Path) -> dict[str, str]:
    try:
        files = json.loads((directory / PULL_MANIFEST).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str) and is_downloadable(k)}


def _digest(path: Path) -> str | None:
    return sha256_of(path.read_bytes()) if path.is_file() else None


def _move_in(staging: Path, names: list[str], target: Path, force: bool, repo_id: str, revision: str) -> None:
    """Move the verified files into ``target``: overwrite only what the last pull wrote and nobody changed."""
    previous = _read_manifest(target)
    incoming = {name: _digest(staging / name) for name in names}
    conflicts = []
    for name, digest in incoming.items():
        current = target / name
        if current.is_dir() or (current.exists() and not current.is_file()):
            conflicts.append(name)
        elif current.is_file() and _digest(current) not in (digest, previous.get(name)):
            conflicts.append(name)
    if conflicts and not force:
        raise TicketHubError(
            f"pulling {repo_id!r} into {target} would overwrite {', '.join(conflicts[:5])}, which the last pull "
            "there did not write (or which changed since); pass force=True (`--force`) to overwrite, or pull "
            "into another folder"
        )
    # Files the last pull wrote that this revision lacks would otherwise mix two revisions in one folder.
    stale = [n for n, d in previous.items() if n not in incoming and _digest(target / n) == d]
    for name in names:
        os.replace(staging / name, target / name)
    for name in stale:
        (target / name).unlink(missing_ok=True)
    atomic_write_json(target / PULL_MANIFEST, {"repo_id": repo_id, "revision": revision, "files": incoming})


def pull(
    repo_id: str, local_dir: str | Path, revision: str | None = None, token: str | None = None, *, force: bool = False
) -> Path:
    """Download a ticket or sparse-checkpoint repo into ``local_dir``; returns it.

    Only the repo's top-level safetensors, JSON, Markdown and PNG files are downloaded, and the repo
    must hold a ticket. A compact checkpoint is expanded next to itself into ``model.safetensors``
    (its sizes checked against its ``config.json`` first), so ``AutoModel*.from_pretrained(local_dir)``
    works whichever form the repo holds. Everything is verified before ``local_dir`` changes; files there
    that the last pull did not write are only overwritten with ``force=True``.
    """
    target = Path(local_dir).expanduser()
    if target.exists() and not target.is_dir():
        raise TicketError(f"cannot pull into {target}: it exists and is not a directory")
    api = api_client(token)
    with hub_errors(repo_id, revision, f"pull into {target}"):
        info = api.model_info(repo_id, revision=revision)
    sha = info.sha or revision
    names = _select_files(repo_id, sha, [s.rfilename for s in info.siblings or []])

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.pull-", dir=target.parent))
    try:
        with hub_errors(repo_id, sha, f"pull into {target}"):
            for name in names:
                api.hf_hub_download(repo_id, name, revision=sha, local_dir=staging)
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping: never kept
        names = _verify(staging, names, repo_id, sha)
        if not target.exists() or (target.is_dir() and not any(target.iterdir())):
            atomic_write_json(
                staging / PULL_MANIFEST,
                {"repo_id": repo_id, "revision": sha, "files": {name: _digest(staging / name) for name in names}},
            )
            os.chmod(staging, 0o777 & ~current_umask())
            os.replace(staging, target)  # a whole new folder appears at once
        else:
            _move_in(staging, names, target, force, repo_id, sha)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
