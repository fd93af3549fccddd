"""benchmarks/structured_tickets.py: structured IMP on real SST-2 (smoke sizes), scores beside measured speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from structured_tickets import pareto  # noqa: E402


def test_pareto_keeps_only_points_nothing_beats_on_both_axes():
    points = [("dense", 1.0, 0.80), ("a", 1.5, 0.80), ("b", 2.0, 0.75), ("c", 1.8, 0.70), ("d", 2.0, 0.75)]
    # a beats dense (faster, same score); c is beaten by b; b and d tie, so neither dominates the other
    assert pareto(points) == ["a", "b", "d"]


def run_smoke(results: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "structured_tickets.py"),
            "--smoke",
            "--results_dir",
            str(results),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_smoke_run_trains_structured_tickets_and_reports_score_beside_speed(tmp_path):
    run_smoke(tmp_path)
    search = tmp_path / "runs" / "sst2" / "structured_heads+neurons"
    rounds = json.loads((search / "results.json").read_text())["rounds"]
    assert [round(r["sparsity"], 2) for r in rounds] == [0.0, 0.3, 0.5]  # measured: whole units, nearest
    by_importance = tmp_path / "runs" / "sst2" / "structured_heads+neurons_importance"
    state = json.loads((by_importance / "imp_state.json").read_text())
    assert state["config"]["unit_score"] == "importance"
    ranked = json.loads((by_importance / "results.json").read_text())["rounds"]
    assert [round(r["sparsity"], 2) for r in ranked] == [0.0, 0.3, 0.5]
    speeds = json.loads((tmp_path / "structured_speed.json").read_text())["sst2"]
    params = speeds["encoder_parameters"]
    assert params["dense"] > params["magnitude@0.3"] > params["magnitude@0.5"]  # shrunk, not masked
    assert params["dense"] > params["importance@0.3"] > params["importance@0.5"]
    assert params["unstructured@0.5"] == params["dense"]
    assert all(v > 0 for v in speeds["b4_s16"]["speedup"].values()) and speeds["b4_s16"]["speedup"]["dense"] == 1.0
    report = (tmp_path / "structured.md").read_text()
    magnitude_table = report.split("### sst2, units ranked by magnitude")[1].split("###")[0]
    importance_table = report.split("### sst2, units ranked by importance")[1]
    for table, rows in ((magnitude_table, rounds), (importance_table, ranked)):
        for r in rows[1:]:
            assert f"| {100 * r['sparsity']:.0f}% | {r['eval_accuracy']:.3f} |" in table
    assert (tmp_path / "plots" / "structured_pareto.png").stat().st_size > 0

    # A second run resumes: nothing is trained again, and --no_timing rebuilds the same report from the record.
    before = (search / "results.json").stat().st_mtime_ns
    run_smoke(tmp_path, "--report", "--no_timing")
    assert (search / "results.json").stat().st_mtime_ns == before
    assert (tmp_path / "structured.md").read_text() == report

    # The artefact: the fastest matching ticket, else the best-scoring one at least 2x faster, with its card.
    # Smoke runs have no full-model seeds and time a tiny batch: set the rows' verdicts and speeds.
    import structured_tickets as st

    from hf_tickets.core.ticket import Ticket

    rep = st.Reproduction(st.SMOKE_SETTINGS, tmp_path)
    speeds = json.loads((tmp_path / "structured_speed.json").read_text())["sst2"]
    rows, summary = st.task_rows(rep, "sst2", st.SMOKE_PLAN, speeds, "magnitude")
    by_score = {"magnitude": rows, "importance": []}
    for r in rows:  # none matching and none 2x faster: no artefact
        r["speedup"]["b4_s16"] = 1.5
    assert st.write_artefact(rep, st.SMOKE_PLAN, by_score, summary, None) is None
    rows[0]["speedup"]["b4_s16"], rows[1]["speedup"]["b4_s16"] = 2.5, 3.0
    rows[0]["score"], rows[1]["score"] = 0.55, 0.6
    out = st.write_artefact(rep, st.SMOKE_PLAN, by_score, summary, None)  # none matching: the best of the 2x faster
    chosen = Ticket.from_pretrained(out)
    assert chosen.equals(Ticket.from_pretrained(search / rounds[2]["ticket"]))
    assert "| 0.6000 | no | 3.00× |" in (out / "README.md").read_text()
    rows[0]["matching"] = True
    rows[0]["speedup"]["b4_s16"] = 1.5
    out = st.write_artefact(rep, st.SMOKE_PLAN, by_score, summary, None)
    chosen = Ticket.from_pretrained(out)
    trained = Ticket.from_pretrained(search / rounds[1]["ticket"])
    assert all(chosen.masks[n].equal(m) for n, m in trained.masks.items())
    card = (out / "README.md").read_text()
    assert "## Faster: remove the pruned heads and neurons" in card
    assert "| yes | 1.50× |" in card  # the matching one, though slower than the others: speed beside the score
