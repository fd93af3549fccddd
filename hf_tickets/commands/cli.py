"""The ``hf-tickets`` command line: each command lives beside the code it drives.

Every command module exposes ``register_cli(subparsers)``, which adds its sub-command(s) and sets
``func`` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import sys

from hf_tickets.commands import compare, demo, hub_commands, transfer

COMMAND_MODULES = (hub_commands, compare, demo, transfer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-tickets", description="Find, store, share and transfer lottery tickets in BERT networks."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = args.func(args)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
