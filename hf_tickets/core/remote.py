"""Where tickets that are not local directories come from and go to: a store the Hub layer registers.

The core knows nothing of the Hub. ``hf_tickets.hub`` registers its download and upload here when it
is imported (``import hf_tickets`` imports it), so ``Ticket.from_pretrained(repo_id)`` and
``Ticket.push_to_hub`` work without the core importing a layer above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hf_tickets.core.errors import TicketError


@dataclass(frozen=True)
class RemoteStore:
    download: Callable[..., str]  # (repo_id, *, revision, token, cache_dir) -> local directory
    push: Callable[..., object]  # (ticket, repo_id, **kwargs) -> commit info


_store: RemoteStore | None = None


def register_remote_store(store: RemoteStore) -> None:
    global _store
    _store = store


def remote_store() -> RemoteStore:
    if _store is None:
        raise TicketError("no Hub support loaded: `import hf_tickets.hub` (or `import hf_tickets`) first")
    return _store
