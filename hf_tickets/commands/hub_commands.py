"""``hf-tickets push``, ``pull`` and ``convert``."""

from __future__ import annotations

from hf_tickets.hub.download import pull
from hf_tickets.hub.sparse_checkpoint import convert
from hf_tickets.hub.upload import push_folder


def register_cli(subparsers) -> None:
    push = subparsers.add_parser(
        "push",
        help="upload a ticket directory (and any sparse checkpoint in it) to the Hub",
        description="Upload DIR's ticket files, safetensors weights, JSON, Markdown and PNG files to REPO_ID as "
        "one commit; a model card is generated unless DIR has a README.md.",
    )
    push.add_argument("dir", metavar="DIR")
    push.add_argument("repo_id", metavar="REPO_ID")
    push.add_argument("--revision", help="branch to commit to (created from main if missing)")
    push.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    push.add_argument("--commit-message")
    push.add_argument("--no-card", dest="create_card", action="store_false", help="do not generate a model card")
    push.set_defaults(func=_cli_push)

    pull_parser = subparsers.add_parser(
        "pull",
        help="download a ticket or sparse checkpoint repo (safetensors/JSON/Markdown/PNG only)",
        description="Download REPO_ID's top-level ticket and checkpoint files into DIR; a compact checkpoint is "
        "expanded to model.safetensors. Everything is verified before DIR changes.",
    )
    pull_parser.add_argument("repo_id", metavar="REPO_ID")
    pull_parser.add_argument("dir", metavar="DIR")
    pull_parser.add_argument("--revision", help="branch, tag or commit sha to download (default: main)")
    pull_parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite files in DIR that an earlier pull did not write (e.g. README.md)",
    )
    pull_parser.set_defaults(func=_cli_pull)
    _register_convert(subparsers)


def _cli_push(args) -> int:
    info = push_folder(
        args.dir,
        args.repo_id,
        revision=args.revision,
        private=args.private,
        commit_message=args.commit_message,
        create_card=args.create_card,
    )
    print(f"pushed {args.dir} to {args.repo_id}: commit {info.oid} ({info.commit_url})")
    return 0


def _cli_pull(args) -> int:
    directory = pull(args.repo_id, args.dir, revision=args.revision, force=args.force)
    print(f"pulled {args.repo_id}{'@' + args.revision if args.revision else ''} into {directory}")
    return 0


def _register_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a sparse checkpoint between the dense and the compact form",
        description="Convert a safetensors file, or every weight file of a checkpoint directory, between the "
        "dense form (loadable by from_pretrained) and the compact form (surviving values + bitmask).",
    )
    parser.add_argument("src", metavar="SRC", help="a .safetensors file or a checkpoint directory")
    parser.add_argument("dst", metavar="DST", help="output file, or output directory for a directory SRC")
    parser.add_argument("--to", required=True, choices=["dense", "compact"], help="the form to write")
    parser.add_argument(
        "--in-place", action="store_true", help="allow DST to be SRC (converted files are written beside the sources)"
    )
    parser.set_defaults(func=_cli_convert)


def _cli_convert(args) -> int:
    for path in convert(args.src, args.dst, args.to, in_place=args.in_place):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
