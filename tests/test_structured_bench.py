"""benchmarks/bench_inference.py runs in smoke mode and reports every model at every shape."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_inference_benchmark_smoke(tmp_path):
    out = tmp_path / "inference.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_inference.py"),
            "--smoke",
            "--sparsities",
            "0.3,0.6",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {(r["model"], r["batch"], r["seq"]): r for r in result["rows"]}
    models = ["dense", "unstructured@0.3", "structured@0.3", "unstructured@0.6", "structured@0.6"]
    assert set(rows) == {(m, b, 8) for m in models for b in (1, 4)}
    for (model, batch, seq), row in rows.items():
        assert row["sequences_per_s"] > 0 and row["speedup_vs_dense"] > 0
        if model == "dense":
            assert row["speedup_vs_dense"] == 1.0
    params = {m: rows[(m, 1, 8)]["encoder_parameters"] for m in models}
    # Masking keeps every parameter; shrinking removes more the sparser the ticket.
    assert params["unstructured@0.6"] == params["dense"]
    assert params["dense"] > params["structured@0.3"] > params["structured@0.6"]
    assert rows[("structured@0.6", 1, 8)]["neurons_removed"] > 0 and rows[("dense", 1, 8)]["neurons_removed"] == 0
    assert "speed-up" in done.stdout
