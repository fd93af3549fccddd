"""How much do tickets overlap? The paper's mask-similarity analysis, per layer and overall.

Similarity of two tickets is the Jaccard index of their *pruned* sets, |A ∩ B| / |A ∪ B|: 1 for
the same subnetwork; for two independent random masks at sparsity s it is about s / (2 - s).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch

from hf_tickets.core.errors import TicketError
from hf_tickets.core.ticket import Ticket

_LAYER = re.compile(r"layers?\.(\d+)\.")


@dataclass
class Overlap:
    first: str
    second: str
    jaccard: float
    agreement: float  # fraction of weights with the same keep/prune decision
    per_layer: dict[str, float]  # layer index (or tensor name) -> Jaccard


def _layer_key(name: str) -> str:
    found = _LAYER.search(name)
    return f"layer {int(found.group(1)):02d}" if found else name


def random_jaccard(sparsity_a: float, sparsity_b: float) -> float:
    """Expected Jaccard of independent random pruned sets at these sparsities."""
    both = sparsity_a * sparsity_b
    either = sparsity_a + sparsity_b - both
    return both / either if either else 1.0


def overlap(a: Ticket, b: Ticket, name_a: str = "A", name_b: str = "B") -> Overlap:
    if a.masks.keys() != b.masks.keys():
        only = sorted(set(a.masks) ^ set(b.masks))[:3]
        raise TicketError(f"{name_a} and {name_b} cover different tensors (e.g. {only}); they cannot be compared")
    totals: dict[str, list[int]] = {}
    same = 0
    for name, keep_a in a.masks.items():
        keep_b = b.masks[name]
        if keep_a.shape != keep_b.shape:
            raise TicketError(f"{name}: {name_a} has shape {tuple(keep_a.shape)}, {name_b} has {tuple(keep_b.shape)}")
        pruned_a, pruned_b = ~keep_a, ~keep_b
        inter = int(torch.count_nonzero(pruned_a & pruned_b))
        union = int(torch.count_nonzero(pruned_a | pruned_b))
        same += keep_a.numel() - int(torch.count_nonzero(keep_a ^ keep_b))
        layer = totals.setdefault(_layer_key(name), [0, 0])
        layer[0] += inter
        layer[1] += union
    inter_all = sum(v[0] for v in totals.values())
    union_all = sum(v[1] for v in totals.values())
    return Overlap(
        first=name_a,
        second=name_b,
        jaccard=inter_all / union_all if union_all else 1.0,
        agreement=same / a.num_weights,
        per_layer={k: (i / u if u else 1.0) for k, (i, u) in totals.items()},
    )


def overlap_table(tickets: dict[str, Ticket]) -> str:
    """A markdown report: pairwise overall Jaccard (with the random-mask expectation), then per layer."""
    pairs = [overlap(tickets[x], tickets[y], x, y) for x, y in itertools.combinations(tickets, 2)]
    lines = [
        "| ticket A | ticket B | sparsity A | sparsity B | Jaccard (pruned) | random masks | agreement |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        sa, sb = tickets[p.first].sparsity, tickets[p.second].sparsity
        lines.append(
            f"| {p.first} | {p.second} | {sa:.3f} | {sb:.3f} | {p.jaccard:.3f} | {random_jaccard(sa, sb):.3f} | "
            f"{p.agreement:.3f} |"
        )
    if pairs:
        layers = list(pairs[0].per_layer)
        lines += [
            "",
            "| layer | " + " | ".join(f"{p.first} vs {p.second}" for p in pairs) + " |",
            "|---|" + "---:|" * len(pairs),
        ]
        lines += [f"| {layer} | " + " | ".join(f"{p.per_layer[layer]:.3f}" for p in pairs) + " |" for layer in layers]
    return "\n".join(lines)


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="how much tickets overlap, per layer and overall")
    parser.add_argument("tickets", nargs="+", help="ticket directories or Hub repo ids (two or more)")
    parser.add_argument("--revision", default=None, help="revision for Hub tickets")
    parser.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    if len(args.tickets) < 2:
        raise SystemExit("hf-tickets compare: give at least two tickets")
    tickets = {path: Ticket.from_pretrained(path, revision=args.revision) for path in args.tickets}
    print(overlap_table(tickets))
    return 0
