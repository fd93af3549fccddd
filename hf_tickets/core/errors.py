"""The one error type users catch: bad tickets, bad targets, bad arguments."""


class TicketError(ValueError):
    """A ticket cannot be built, read or applied; the message says which tensor or file and why."""
