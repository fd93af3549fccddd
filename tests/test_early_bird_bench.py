"""benchmarks/early_bird_masks.py runs in smoke mode and its distances mean what its table says."""

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The smoke model's units: 2 layers of 2 heads and 64 FFN neurons.
SMOKE_UNITS = 2 * (2 + 64)


def counted_in_units(distance: float) -> bool:
    """A unit distance is changed / (units A prunes + units B prunes): a fraction with a small denominator."""
    return abs(float(Fraction(distance).limit_denominator(2 * SMOKE_UNITS)) - distance) < 1e-12


@pytest.mark.parametrize(
    "strategy, sparsities", [("global_magnitude", (0.1, 0.5, 0.7)), ("heads+neurons", (0.3, 0.5, 0.7))]
)
def test_early_bird_masks_benchmark_smoke(tmp_path, strategy, sparsities):
    out = tmp_path / "early_bird_masks.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "early_bird_masks.py"), "--smoke", "--output", str(out)]
        + ([] if strategy == "global_magnitude" else ["--strategy", strategy]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["settings"]["strategy"] == strategy and tuple(result["settings"]["sparsities"]) == sparsities
    steps = [0, 1, 2, 3, 4]  # smoke: 2 epochs of 2 steps, a check after every step
    assert result["steps"] == 4
    distances = [r[k] for r in result["rows"] for k in r if k.startswith(("vs_", "movement_")) and r[k]]
    # Early bird's distance is the strategy's own: heads and neurons for heads+neurons, weights otherwise.
    assert len(distances) > 20
    assert all(map(counted_in_units, distances)) == (strategy == "heads+neurons")
    for sparsity in sparsities:
        rows = [r for r in result["rows"] if r["sparsity"] == sparsity]
        assert [r["step"] for r in rows] == steps
        first, last = rows[0], rows[-1]
        assert first["vs_theta0"] == 0.0 and first["vs_prev"] is None and first["relative_drift"] == 0.0
        assert last["vs_end"] == 0.0 and last["movement_vs_end"] == 0.0
        assert rows[1]["movement_vs_prev"] is None and rows[2]["movement_vs_prev"] is not None
        assert all(
            0.0 <= r[k] <= 1.0 for r in rows for k in r if k.startswith(("vs_", "movement_")) and r[k] is not None
        )
        # The weights move from θ0 with every step, so the drift grows and the mask leaves θ0's.
        assert all(a["relative_drift"] < b["relative_drift"] for a, b in zip(rows, rows[1:]))
        assert last["vs_theta0"] > 0.0
    lines = out.read_text().splitlines()
    assert len([line for line in lines if re.match(r"\| \d+% \| \d+ \|", line)]) == 3 * len(steps)
    # Where the rule stops at 50% (third column): the first step from the third check on whose distance and
    # the one before are under the threshold (the first check, step 1, has no distance in a round).
    stops = {float(line.split("|")[1]): line.split("|")[3].strip() for line in lines if re.match(r"\| 0\.\d+ \|", line)}
    assert set(stops) == {0.1, 0.03, 0.01, 0.003}
    rows = {r["step"]: r for r in result["rows"] if r["sparsity"] == 0.5}
    for threshold, cell in stops.items():
        stop = next((s for s in range(3, 5) if max(rows[s]["vs_prev"], rows[s - 1]["vs_prev"]) < threshold), None)
        assert cell == (
            "never" if stop is None else f"{stop} ({rows[stop]['vs_theta0']:.3f}, {rows[stop]['vs_end']:.3f})"
        )
