"""hf_tickets: find, store, share and transfer lottery tickets in pre-trained BERT networks."""

__version__ = "0.1.0"

from .errors import TicketError  # noqa: E402
from .pruning import prune  # noqa: E402
from .strategies import STRATEGIES, register_strategy  # noqa: E402
from .targets import PRESETS, resolve_targets  # noqa: E402
from .ticket import ApplyReport, Ticket, TicketConfig  # noqa: E402

# Trainer / Hub / IMP pieces load on first use, so `import hf_tickets` stays light for core users.
_LAZY = {
    "TicketCallback": "hf_tickets.callback",
    "push_sparse_checkpoint": "hf_tickets.hub",
    "IMPManager": "hf_tickets.imp",
    "IMPConfig": "hf_tickets.imp",
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
    "register_strategy",
    "resolve_targets",
]
