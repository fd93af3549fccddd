"""``hf-tickets shrink SOURCE OUT``: a physically smaller model from a structured ticket.

SOURCE is a sparse checkpoint folder (model + ticket, dense or compact weights) or a ticket (folder
or Hub id), which is applied to ``--model`` (default: the ticket's base model). The heads and FFN
neurons the ticket prunes whole are removed (``hf_tickets.core.shrink``); OUT is a model folder.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import transformers

from hf_tickets.core.errors import TicketError
from hf_tickets.core.shrink import RECORD_KEY, load_hint, save_shrunk, shrink
from hf_tickets.core.ticket import MASKS_FILE, Ticket
from hf_tickets.hub.sparse_checkpoint import COMPACT_SUFFIX, convert

logger = logging.getLogger(__name__)


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "shrink", help="physically remove the attention heads and FFN neurons a ticket prunes whole"
    )
    parser.add_argument("source", help="a sparse checkpoint folder (model + ticket), or a ticket folder or Hub id")
    parser.add_argument("output_dir", help="where to write the smaller model")
    parser.add_argument(
        "--model", default=None, help="for a ticket: the model to apply it to (default: its base_model)"
    )
    parser.add_argument("--revision", default=None, help="revision of a Hub ticket")
    parser.add_argument(
        "--stock_config",
        action="store_true",
        help="remove only what a stock config describes (pruned heads stay as zeros, the same number of neurons "
        "per layer): the result then loads without trust_remote_code",
    )
    parser.set_defaults(func=_run_cli)


def load_model_and_ticket(source: str, scratch: Path, model_path: str | None = None, revision: str | None = None):
    """(model, ticket, folder with the model's tokenizer) for a sparse checkpoint folder or a ticket.

    A compact checkpoint is expanded into ``scratch`` first (``from_pretrained`` reads only the dense form).
    """
    folder = Path(source)
    if (folder / "config.json").is_file():
        if not (folder / MASKS_FILE).is_file():
            raise TicketError(f"{folder} holds a model but no ticket ({MASKS_FILE}): shrink needs the ticket")
        ticket = Ticket.from_pretrained(folder)
        if any(p.name.endswith(COMPACT_SUFFIX) for p in folder.glob("*.safetensors")):
            convert(folder, scratch, "dense")
            return _load_model(scratch), ticket, folder
        return _load_model(folder), ticket, folder
    ticket = Ticket.from_pretrained(source, revision=revision)
    base = model_path or ticket.config.base_model
    if not base:
        raise TicketError(f"{source}: ticket_config.json names no base_model; pass --model")
    return _load_model(base), ticket, Path(base)


def _load_model(path):
    config = transformers.AutoConfig.from_pretrained(path)
    architecture = (getattr(config, "architectures", None) or ["AutoModel"])[0]
    model_class = getattr(transformers, architecture, transformers.AutoModel)
    return model_class.from_pretrained(path).eval()


def _run_cli(args) -> int:
    with tempfile.TemporaryDirectory(prefix="hf_tickets_shrink_") as scratch:
        model, ticket, tokenizer_dir = load_model_and_ticket(args.source, Path(scratch), args.model, args.revision)
        tokenizer = None
        if (tokenizer_dir / "tokenizer_config.json").is_file():
            tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
        else:
            logger.warning("no tokenizer beside %s: %s gets none", tokenizer_dir, args.output_dir)
        shrink(model, ticket, stock_config=args.stock_config)
        out = save_shrunk(model, args.output_dir, tokenizer)
    record = getattr(model.config, RECORD_KEY)
    print(json.dumps(record, indent=2))
    print(f"wrote {out}; load it with {load_hint(model, out)}")
    return 0
