"""The ``hf-tickets`` command line: each command lives beside the code it drives.

Every module listed in ``COMMAND_MODULES`` exposes ``register_cli(subparsers)``, which adds its
sub-command(s) and sets ``func`` to a callable taking the parsed arguments and returning an
exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: tuple[str, ...] = ("hf_tickets.hub", "hf_tickets.sparse_checkpoint", "hf_tickets.compare", "hf_tickets.demo", "hf_tickets.transfer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-tickets", description="Find, store, share and transfer lottery tickets in BERT networks."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = args.func(args)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
