"""The MLM ticket (meant to be universal) as a downloadable artefact: ``benchmarks/results/mlm_ticket/``.

The calibrated-head MLM ticket at the Table 3 sparsity, saved as a ticket directory (masks, config) with
its model card (transfer table, sparsity-versus-score plot, provenance), the head-calibration record and
the Table 3 rows as JSON. ``hf-tickets push benchmarks/results/mlm_ticket ORG/NAME`` publishes it; users
apply it in the README's three lines. Rebuilt by the reproduction's report as its runs finish.
"""

from __future__ import annotations

from pathlib import Path

from claims_report import CALIBRATED, ClaimSettings, table3
from reproduce_report import MLM, read_json, row_at, saved_ticket_dir, search_rows, summarise

from hf_tickets.core.atomic_files import atomic_write_json
from hf_tickets.core.ticket import MASKS_FILE, Ticket

ARTEFACT_DIR = "mlm_ticket"
CALIBRATION_RECORD = "head_calibration.json"
TRANSFER_RECORD = "transfer.json"
#: The packaged MiniLM's Hub id: the run folders record its local path, which means nothing to a downloader.
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def card_transfer_rows(entries: list[dict]) -> list[dict]:
    """Table 3 rows in the card's transfer format (finished transfers only)."""
    return [
        {
            "source": "mlm (calibrated head)",
            "task": e["target"],
            "metric": e["metric"],
            "score": e["mlm_calibrated"],
            "full_score": e["full_mean"],
            # None where the target's full model cannot support a verdict (at chance): not a "no".
            "matching": e["verdict"].startswith("transfers") if e.get("testable", True) else None,
            "verdict": e["verdict"],
        }
        for e in entries
        if e["mlm_calibrated"] is not None
    ]


def build_ticket_dir(
    ticket: Ticket,
    out_dir: Path,
    *,
    rounds: list[dict],
    table3_entries: list[dict],
    calibration: dict | None,
    base_model: str,
) -> Path:
    """Write ``ticket`` with its card, plot, head-calibration record and Table 3 rows into ``out_dir``."""
    from hf_tickets.hub.cards import plot_results, ticket_card
    from hf_tickets.training.head_calibration import HeadCalibration

    out_dir = Path(out_dir)
    ticket.config.base_model = base_model
    # Whether it is universal is the transfer table's to say, not a provenance flag (earlier artefacts set one).
    ticket.config.provenance.pop("universal", None)
    ticket.config.provenance.update(task=MLM, datasets=["wikitext"])
    if calibration is not None:
        ticket.config.provenance["head_calibration"] = HeadCalibration(**calibration).to_provenance()
    transfer_rows = card_transfer_rows(table3_entries)
    ticket.config.provenance["transfer"] = {r["task"]: round(r["score"], 4) for r in transfer_rows}
    ticket.save_pretrained(out_dir)
    plot = plot_results(ticket, rounds, out_dir / "sparsity_vs_score.png") if rounds else None
    card = ticket_card(
        ticket, results=rounds or None, transfer=transfer_rows or None, plot_path=plot.name if plot else None
    )
    card.save(out_dir / "README.md")
    if calibration is not None:
        atomic_write_json(out_dir / CALIBRATION_RECORD, calibration)
    atomic_write_json(out_dir / TRANSFER_RECORD, table3_entries)
    return out_dir


def mlm_ticket_dir(results_dir: Path, sparsity: float) -> Path | None:
    """The calibrated MLM search's ticket at ``sparsity``; None until the search reached it. A clone holds the
    run's ticket configs but not their masks (gitignored): the artefact's copy stands in."""
    run_dir = results_dir / "runs" / MLM / CALIBRATED
    if row_at(search_rows(run_dir), sparsity) is None:
        return None
    if (found := saved_ticket_dir(run_dir, sparsity)) is not None:
        return found
    artefact = results_dir / ARTEFACT_DIR
    return artefact if (artefact / MASKS_FILE).is_file() else None


def write_mlm_ticket_artefact(
    results_dir: Path, settings, claims: ClaimSettings, base_model: str = BASE_MODEL
) -> Path | None:
    """The artefact from the run folders; None until the calibrated MLM search reached the Table 3 sparsity."""
    runs_dir = results_dir / "runs"
    run_dir = runs_dir / MLM / CALIBRATED
    rows = search_rows(run_dir)
    source = mlm_ticket_dir(results_dir, claims.table3_sparsity)
    if source is None:
        return None
    entries = table3(runs_dir, settings, claims, summarise(runs_dir, settings))
    return build_ticket_dir(
        Ticket.from_pretrained(source),
        results_dir / ARTEFACT_DIR,
        rounds=[r for r in rows if r["sparsity"] <= claims.table3_sparsity + 1e-9],
        table3_entries=entries,
        calibration=read_json(run_dir / CALIBRATION_RECORD),
        base_model=base_model,
    )
