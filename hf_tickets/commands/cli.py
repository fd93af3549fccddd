"""The ``hf-tickets`` command line: each command lives beside the code it drives.

Every command module exposes ``register_cli(subparsers)``, which adds its sub-command(s) and sets
``func`` to a callable taking the parsed arguments and returning an exit code.

A failure the user can act on (a ``TicketError``: bad file, bad argument, Hub refusal; or an
``OSError``: missing file, full disk) is printed as one line, ``hf-tickets: error: ...``, with exit
code 1; ``--debug`` (anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from hf_tickets.commands import compare, demo, hub_commands, shrink_command, transfer
from hf_tickets.core.errors import TicketError

COMMAND_MODULES = (hub_commands, shrink_command, compare, demo, transfer)
PROG = "hf-tickets"
DEBUG_FLAG = "--debug"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Find, store, share and transfer lottery tickets in BERT networks."
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    args = build_parser().parse_args([a for a in argv if a != DEBUG_FLAG])
    try:
        status = args.func(args)
    except (TicketError, OSError) as err:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, TicketError) else f"{type(err).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
