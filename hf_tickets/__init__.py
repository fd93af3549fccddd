"""hf_tickets: find, store, share and transfer lottery tickets in pre-trained BERT networks.

Layers, each importing only those below it: ``core`` (tickets, selection, strategies, targets,
schedules, files) <- ``training`` (callback, IMP, masking) <- ``tasks`` / ``hub`` <- ``experiments``
(what the recipes share) <- ``commands`` (the ``hf-tickets`` CLI).
"""

import hf_tickets.hub  # noqa: F401  registers the Hub as the core's remote store: Ticket.from_pretrained(repo_id)
from hf_tickets.core.errors import TicketError
from hf_tickets.core.pruning import prune
from hf_tickets.core.strategies import STRATEGIES, register_strategy
from hf_tickets.core.targets import PRESETS, resolve_targets
from hf_tickets.core.ticket import ApplyReport, Ticket, TicketConfig
from hf_tickets.core.version import __version__
from hf_tickets.hub.upload import push_sparse_checkpoint

# The Trainer pieces load on first use: importing transformers' Trainer takes seconds, and
# `import hf_tickets` stays light for users of the core alone.
_LAZY = {
    "TicketCallback": "hf_tickets.training.callback",
    "IMPManager": "hf_tickets.training.imp",
    "IMPConfig": "hf_tickets.training.imp_config",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_tickets' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "ApplyReport",
    "PRESETS",
    "STRATEGIES",
    "Ticket",
    "TicketConfig",
    "TicketError",
    "__version__",
    "prune",
    "push_sparse_checkpoint",
    "register_strategy",
    "resolve_targets",
]
