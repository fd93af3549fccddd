"""Download tickets and sparse checkpoints: safe files only (safetensors, JSON, Markdown, PNG), each
checked before use; nothing pickled is downloaded, let alone loaded. ``revision`` pins a branch, tag or sha.
"""

from __future__ import annotations

from pathlib import Path

from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE
from hf_tickets.hub.hub_api import ALLOW_PATTERNS, TicketHubError, api_client, check_files, describe_repo, hub_errors


def download_ticket(
    repo_id: str, *, revision: str | None = None, token: str | None = None, cache_dir: str | None = None
) -> str:
    """Download a ticket repo's safe files into the Hub cache; returns the local snapshot directory."""
    with hub_errors(repo_id, revision, "download the ticket"):
        directory = api_client(token).snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=ALLOW_PATTERNS
        )
    for required in (MASKS_FILE, CONFIG_FILE):
        if not (Path(directory) / required).is_file():
            raise TicketHubError(
                f"{describe_repo(repo_id, revision)} holds no hf_tickets ticket: {required} is missing"
            )
    check_files(directory, repo_id, revision)
    return directory


def pull(repo_id: str, local_dir: str | Path, revision: str | None = None, token: str | None = None) -> Path:
    """Download a ticket or sparse-checkpoint repo into ``local_dir`` (safe files only).

    A compact checkpoint is expanded next to itself into ``model.safetensors``, so
    ``AutoModel*.from_pretrained(local_dir)`` works whichever form the repo holds.
    """
    from hf_tickets.hub.sparse_checkpoint import COMPACT_SUFFIX, convert

    with hub_errors(repo_id, revision, f"pull into {local_dir}"):
        directory = Path(
            api_client(token).snapshot_download(
                repo_id, revision=revision, local_dir=local_dir, allow_patterns=ALLOW_PATTERNS
            )
        )
    check_files(directory, repo_id, revision)
    if any(p.name.endswith(COMPACT_SUFFIX) for p in directory.glob("*.safetensors")):
        convert(directory, directory, "dense")
    return directory
