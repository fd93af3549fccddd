"""hf_tickets: find, store, share and transfer lottery tickets in pre-trained BERT networks."""

__version__ = "0.1.0"

from .errors import TicketError  # noqa: E402
from .pruning import prune  # noqa: E402
from .strategies import STRATEGIES, register_strategy  # noqa: E402
from .targets import PRESETS, resolve_targets  # noqa: E402
from .ticket import ApplyReport, Ticket, TicketConfig  # noqa: E402

__all__ = [
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
