"""The Hub client as hf_tickets uses it: endpoint read at call time, errors that name repo and revision.

The Hub endpoint is ``HF_ENDPOINT`` read at call time (``huggingface_hub`` reads it once, at
import), so a mirror or a local test Hub set up after import is honoured too. Failures raise
:class:`TicketHubError` naming the repo, revision and file; the Hub's typed error is its ``__cause__``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open

from hf_tickets.core.errors import TicketError
from hf_tickets.core.version import __version__

ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.png"]
CARD_FILE = "README.md"
PLOT_FILE = "sparsity_vs_score.png"


class TicketHubError(TicketError):
    """A Hub repository, revision or file cannot be used; the message names which and why."""


#: The HTTP stacks huggingface_hub may use: their connection errors reach us untranslated.
_TRANSPORT_MODULES = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3"}


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def api_client(token: str | None = None) -> HfApi:
    return HfApi(endpoint=hub_endpoint(), token=token, library_name="hf_tickets", library_version=__version__)


def describe_repo(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r} (revision {revision or constants.DEFAULT_REVISION!r}) on {hub_endpoint()}"


@contextmanager
def hub_errors(repo_id: str, revision: str | None, what: str) -> Iterator[None]:
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
        raise TicketHubError(
            f"cannot {what}: the Hub at {hub_endpoint()} could not be reached and no copy is cached"
        ) from err
    except EntryNotFoundError as err:
        raise TicketHubError(
            f"cannot {what}: a file is missing from {describe_repo(repo_id, revision)}: {err}"
        ) from err
    except HFValidationError as err:
        raise TicketHubError(f"cannot {what}: {repo_id!r} is not a valid repo id: {err}") from err
    except HfHubHTTPError as err:
        raise TicketHubError(
            f"cannot {what}: the Hub refused a request about {describe_repo(repo_id, revision)}: {err}"
        ) from err
    except Exception as err:
        if type(err).__module__.split(".")[0] not in _TRANSPORT_MODULES:
            raise
        raise TicketHubError(
            f"cannot {what}: the Hub at {hub_endpoint()} could not be reached ({type(err).__name__}: {err})"
        ) from err


#: What a pull may write: top-level files of the safe types, named plainly (no dot files, no paths).
SAFE_SUFFIXES = (".safetensors", ".json", ".md", ".png")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_escaping_name(name: str) -> bool:
    """A repo file name that could point outside the folder it is downloaded to."""
    return (
        not isinstance(name, str)
        or name.startswith(("/", "~"))
        or "\\" in name
        or ".." in name.split("/")
        or any(ord(c) < 32 for c in name)
    )


def is_downloadable(name: str) -> bool:
    """A top-level file of a safe type with a plain name (``.cache/...``, ``sub/x.json``, ``.x.json`` are not)."""
    return "/" not in name and name.endswith(SAFE_SUFFIXES) and _PLAIN_NAME.fullmatch(name) is not None


def check_files(directory: str | Path, repo_id: str, revision: str | None, names: list[str] | None = None) -> None:
    """Parse each downloaded file (``names``, default: the top-level ones) by its type, so a broken one is
    named with its repo: JSON, safetensors headers, UTF-8 Markdown, PNG signature."""
    directory = Path(directory)
    paths = (
        [directory / n for n in names] if names is not None else sorted(p for p in directory.iterdir() if p.is_file())
    )
    for path in paths:
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    f.keys()
            elif path.suffix == ".md":
                path.read_text(encoding="utf-8")
            elif path.suffix == ".png":
                with path.open("rb") as f:
                    if f.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
                        raise ValueError("no PNG signature")
        except (SafetensorError, OSError, ValueError, RecursionError) as err:
            kind = {".json": "JSON", ".safetensors": "safetensors", ".md": "UTF-8 text", ".png": "PNG"}[path.suffix]
            raise TicketHubError(
                f"{path.name} in {describe_repo(repo_id, revision)} is not a valid {kind} file "
                f"(corrupt or truncated upload?): {' '.join(str(err).split())[:300]}"
            ) from err
