"""Where a model's weights came from: the Hub repo id and commit, never a local path.

``from_pretrained`` records what it was given in ``config._name_or_path`` (a repo id, or a local
directory). transformers 4 also kept the commit it resolved in ``config._commit_hash``;
transformers 5 keeps it nowhere, but it downloaded into the Hugging Face cache
(``models--org--name/snapshots/<sha>``), so the commit is the cached snapshot whose weights are
the model's (checked on the few values of the ticket's fingerprint: a model loaded at another
revision, or changed since, matches no snapshot and its revision stays unknown). A local
directory that is such a snapshot names its repo and commit; any other local directory has no
known origin, and its path (which says nothing to anyone else and may leak a user name) is not
recorded. Only the local disk is read, never the network.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from hf_tickets.core.ticket import fingerprint_positions

# A Hub repo id: "name" or "org/name" (no "--" or "..", which the Hub refuses, so the cache's
# "models--org--name" folder names split back unambiguously).
_REPO_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CACHE_FOLDER = re.compile(r"^models--(?P<org_name>.+)$")


@dataclass(frozen=True)
class ModelOrigin:
    """The Hub repo (and commit) a model was loaded from; ``repo_id=None`` when it is not known."""

    repo_id: str | None
    revision: str | None = None

    @property
    def known(self) -> bool:
        return self.repo_id is not None


UNKNOWN = ModelOrigin(None, None)


def is_hub_repo_id(text: Any) -> bool:
    """``text`` reads as a Hub model id (``bert-base-uncased``, ``org/name``), not as a filesystem path."""
    return isinstance(text, str) and bool(_REPO_ID.match(text)) and not text.startswith((".", "~"))


def _cache_snapshot(path: str) -> ModelOrigin | None:
    """``(org/name, sha)`` for a path inside ``models--org--name/snapshots/<sha>``, else None."""
    parts = PurePath(path).parts
    for i in range(len(parts) - 2):
        match = _CACHE_FOLDER.match(parts[i])
        if match and parts[i + 1] == "snapshots" and _COMMIT.match(parts[i + 2]):
            repo_id = match.group("org_name").replace("--", "/", 1)
            if is_hub_repo_id(repo_id):
                return ModelOrigin(repo_id, parts[i + 2])
    return None


def model_origin(name_or_path: str | None, commit_hash: str | None = None) -> ModelOrigin:
    """The Hub origin of weights loaded from ``name_or_path`` (what ``from_pretrained`` was given).

    ``commit_hash`` is ``config._commit_hash``; it pins the revision of a repo id. A cache snapshot
    names its own commit. Anything else (a plain local directory) is :data:`UNKNOWN`.
    """
    if not name_or_path:
        return UNKNOWN
    text = str(name_or_path)
    snapshot = _cache_snapshot(text)
    if snapshot is not None:
        return snapshot
    # A relative directory ("out/ckpt") can read like a repo id: from_pretrained loads it first, so do we.
    if not is_hub_repo_id(text) or os.path.isdir(text):
        return UNKNOWN
    revision = commit_hash if isinstance(commit_hash, str) and _COMMIT.match(commit_hash) else None
    return ModelOrigin(text, revision)


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache, located the way ``huggingface_hub`` does (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _cached_commits(repo_id: str, cache_dir: Path) -> list[str]:
    """Commits of ``repo_id`` in the cache: the one ``refs/main`` names first, then the other snapshots."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    try:
        main = (repo_dir / "refs" / "main").read_text().strip()
        snapshots = sorted(p.name for p in (repo_dir / "snapshots").iterdir() if _COMMIT.match(p.name))
    except OSError:
        return []
    return sorted(snapshots, key=lambda sha: sha != main)


def _weight_file_of(snapshot: Path, keys: list[str]) -> tuple[Path, str] | None:
    """The safetensors file of a snapshot holding one of ``keys`` (single file or sharded index)."""
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return next(((snapshot / weight_map[k], k) for k in keys if k in weight_map), None)
    single = snapshot / "model.safetensors"
    if not single.is_file():
        return None
    with safe_open(str(single), framework="pt") as f:
        names = set(f.keys())
    return next(((single, k) for k in keys if k in names), None)


def _snapshot_holds(snapshot: Path, fingerprint: Mapping[str, torch.Tensor], prefix: str) -> bool:
    """Whether the snapshot's weights have the fingerprint's values (two tensors are plenty)."""
    checked = 0
    for name, values in list(fingerprint.items())[:2]:
        found = _weight_file_of(snapshot, [f"{prefix}.{name}" if prefix else name, name])
        if found is None:
            return False
        path, key = found
        with safe_open(str(path), framework="pt") as f:
            weight = f.get_tensor(key).reshape(-1)
        if weight.numel() < len(values):
            return False
        stored = weight[fingerprint_positions(weight.numel())].float()
        if stored.shape != values.shape or not torch.equal(stored, values.float()):
            return False
        checked += 1
    return checked > 0


def cached_revision(
    repo_id: str, fingerprint: Mapping[str, torch.Tensor], prefix: str = "", cache_dir: Path | None = None
) -> str | None:
    """The commit of the cached snapshot of ``repo_id`` whose weights match ``fingerprint``, else None."""
    cache_dir = cache_dir or hub_cache_dir()
    for sha in _cached_commits(repo_id, cache_dir):
        try:
            if _snapshot_holds(
                cache_dir / ("models--" + repo_id.replace("/", "--")) / "snapshots" / sha, fingerprint, prefix
            ):
                return sha
        except (OSError, SafetensorError, ValueError, RuntimeError):  # a partial or foreign download: not this one
            continue
    return None


def origin_of_config(config: Any) -> ModelOrigin:
    """:func:`model_origin` of a transformers ``PretrainedConfig`` (or anything with those attributes)."""
    return model_origin(getattr(config, "_name_or_path", None), getattr(config, "_commit_hash", None))


def base_model_origin(config: Any, fingerprint: Mapping[str, torch.Tensor], prefix: str = "") -> ModelOrigin:
    """Where a ticket's base came from: :func:`origin_of_config`, its revision completed from the cache."""
    origin = origin_of_config(config)
    if origin.known and origin.revision is None and fingerprint:
        origin = ModelOrigin(origin.repo_id, cached_revision(origin.repo_id, fingerprint, prefix))
    return origin
