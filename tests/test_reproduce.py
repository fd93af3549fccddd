"""benchmarks/reproduce.py and reproduce_report.py: the report from synthetic run folders, the plan's resumability
and budget. No training: the run folders are written here with scores chosen so that every answer is known."""

import dataclasses
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reproduce  # noqa: E402
import reproduce_report  # noqa: E402

SETTINGS = dataclasses.replace(
    reproduce.SMOKE, name="synthetic", tasks=["cola", "mrpc"], seeds=[42, 43, 44], sparsity_schedule="0.2,0.5,0.7,0.9"
)
SPARSITIES = [0.2, 0.5, 0.7, 0.9]
DRIFT = 2e-8  # pruning reaches the scheduled sparsity only up to float error, e.g. 0.9000000188
METRIC = {"cola": "eval_matthews_correlation", "mrpc": "eval_accuracy", "mlm": "eval_accuracy"}
TITLE = {"cola": "CoLA", "mrpc": "MRPC", "mlm": "MLM"}
PAPER = {"cola": 0.5, "mrpc": 0.5, "mlm": 0.7}  # Chen et al. Table 2: the fallback source sparsity for transfers
FULL = {"cola": {42: 0.40, 43: 0.50, 44: 0.60}, "mrpc": {42: 0.70, 43: 0.74, 44: 0.72}, "mlm": {42: 0.50}}
# Pruned rounds' scores (sparsity 0.2, 0.5, 0.7, 0.9). CoLA's IMP curve leaves the band at 50% and comes back at 70%;
# MRPC's IMP never reaches its band (its transfers fall back to the paper's 50%); MLM has one seed (1% band).
CURVES = {
    "cola": {
        "imp": [0.45, 0.30, 0.42, 0.10],
        "random_pruning": [0.50, 0.20, 0.10, 0.20],
        "standard_pruning": [0.55, 0.50, 0.45, 0.30],
        "early_bird": [0.44, 0.41, 0.20, 0.10],
    },
    "mrpc": {
        "imp": [0.66, 0.65, 0.62, 0.55],
        "random_pruning": [0.60, 0.66, 0.50, 0.56],
        "standard_pruning": [0.71, 0.70, 0.69, 0.60],
        "early_bird": [0.71, 0.60, 0.60, 0.50],
    },
    "mlm": {"imp": [0.499, 0.49, 0.30, 0.10]},
}
IMP_STEPS, EB_STEPS = [100, 100, 100, 100, 100], [100, 60, 55, 50, 40]
TRANSFERS = {("mlm", "cola"): 0.41, ("mlm", "mrpc"): 0.69, ("cola", "mrpc"): 0.71, ("mrpc", "cola"): 0.35}
# Early-bird tickets trained fully from θ0, at IMP's matching sparsity (CoLA 70%) and the paper's (50%); the
# early-bird rounds' own scores (CURVES) are of under-trained models and must not decide matching, except the
# last round's (90%), which early bird never stops.
EB_RETRAINED = {"cola": {0.5: 0.35, 0.7: 0.45}, "mrpc": {0.5: 0.715}}


N_RETRAINED = sum(len(v) for v in EB_RETRAINED.values())


def full_stats(task):
    scores = list(FULL[task].values())
    return statistics.fmean(scores), statistics.stdev(scores) if len(scores) > 1 else None


def band(task):
    mean, std = full_stats(task)
    return std if std is not None else 0.01 * mean


def expected_matching(task):
    """The sparsest pruned round within one std of the full mean (not the last before the curve first leaves it)."""
    mean = full_stats(task)[0]
    inside = [s for s, v in zip(SPARSITIES, CURVES[task]["imp"]) if v >= mean - band(task)]
    return max(inside, default=None)


def source_sparsity(task):
    return expected_matching(task) or PAPER[task]


def write_json(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def search_record(task, kind, n_rounds=5):
    metric, round0 = METRIC[task], FULL[task][42]
    scores = [0.0 if kind == "random_pruning" else round0, *CURVES[task][kind]]  # random's round 0: 1-step stand-in
    steps = EB_STEPS if kind == "early_bird" else IMP_STEPS
    rounds = [
        {
            "round": i,
            "sparsity": s + (DRIFT if s else 0.0),
            "baseline": None,
            metric: v,
            "train_steps": steps[i],
            "train_time_s": steps[i] / 10,
            "ticket": f"round_{i:02d}/ticket",
        }
        for i, (s, v) in enumerate(zip([0.0, *SPARSITIES], scores))
    ]
    return {"rounds": rounds[:n_rounds]}


def build_runs(results_dir):
    runs = results_dir / "runs"
    for task in SETTINGS.tasks:
        for seed in SETTINGS.seeds[1:]:
            write_json(
                runs / task / f"dense_seed{seed}" / "all_results.json", {METRIC[task]: FULL[task][seed], "seed": seed}
            )
        for kind in reproduce_report.SEARCH_KINDS:
            write_json(runs / task / kind / "results.json", search_record(task, kind))
        for sparsity, score in EB_RETRAINED[task].items():
            write_json(
                runs / task / "early_bird_retrain" / f"{100 * sparsity:.0f}" / "transfer_results.json",
                {"task": task, "main_metric": METRIC[task], "metrics": {METRIC[task]: score}},
            )
    write_json(runs / "mlm" / "imp" / "results.json", search_record("mlm", "imp"))
    for (source, target), score in TRANSFERS.items():
        folder = f"{source}@{round(100 * source_sparsity(source))}__{target}"
        write_json(
            runs / "transfer" / folder / "transfer_results.json",
            {"task": target, "main_metric": METRIC[target], "metrics": {METRIC[target]: score}},
        )
    return runs


def row(markdown, label):
    for line in filter(lambda line: line.startswith("|"), markdown.splitlines()):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{markdown}")


def test_constructed_curves_exercise_the_rules():
    """Guards the fixture: CoLA's answer differs from "last round before the curve first leaves the band"."""
    mean, std = full_stats("cola")
    first_out = next(i for i, v in enumerate(CURVES["cola"]["imp"]) if v < mean - std)
    assert expected_matching("cola") not in (None, SPARSITIES[first_out - 1])
    assert expected_matching("mrpc") is None and expected_matching("mlm") is not None


def test_complete_report(tmp_path):
    build_runs(tmp_path)
    assert reproduce_report.write_report(tmp_path, SETTINGS)["complete"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("table2.md", "transfer.md", "early_bird.md", "findings.md", "progress.md"):
        assert "Partial results" not in (tmp_path / name).read_text(), name
    for task in ("cola", "mrpc", "mlm"):
        assert (tmp_path / "plots" / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["complete"] is True
    n_runs = len(SETTINGS.tasks) * (len(SETTINGS.seeds) - 1 + 4) + 1 + len(TRANSFERS) + N_RETRAINED
    assert f"{n_runs} of {n_runs} planned runs done." in (tmp_path / "progress.md").read_text()

    # Full model: IMP round 0 is seed 42's score, the dense runs the others'; sample std (n - 1).
    table2 = (tmp_path / "table2.md").read_text()
    assert row(table2, "")[:3] == ["CoLA", "MRPC", "MLM"]
    cells = row(table2, "full model (mean ± std over seeds)")
    for i, task in enumerate(("cola", "mrpc")):
        mean, std = full_stats(task)
        assert cells[i] == f"{mean:.3f} ± {std:.3f}"
        assert summary["tasks"][task]["full_mean"] == pytest.approx(mean)
        assert summary["tasks"][task]["full_std"] == pytest.approx(std)
        assert {int(k): v for k, v in summary["tasks"][task]["full_scores"].items()} == pytest.approx(FULL[task])
    assert cells[2] == f"{FULL['mlm'][42]:.3f} (1 seed)"

    # Highest matching sparsity: the sparsest round in the band, even past a round that left it.
    matching = row(table2, "**matching sparsity, IMP (ours)**")
    for i, task in enumerate(("cola", "mrpc", "mlm")):
        expected = expected_matching(task)
        assert matching[i] == ("—" if expected is None else f"{100 * expected:.0f}%")
        got = summary["tasks"][task]["imp_matching"]["sparsity"]
        assert got is None if expected is None else got == pytest.approx(expected)
    i_cola = SPARSITIES.index(expected_matching("cola"))
    for label, kind in (
        ("IMP ticket, rewind to θ0, at that sparsity", "imp"),
        ("random pruning at that sparsity", "random_pruning"),
        ("standard pruning at that sparsity", "standard_pruning"),
    ):
        assert row(table2, label)[0] == f"{CURVES['cola'][kind][i_cola]:.3f}"
        assert row(table2, label)[1] == "—"  # MRPC has no matching ticket

    # IMP beats random pruning: counted over the pruned sparsities only (random's round 0 is a stand-in).
    beats = row(table2, "IMP beats random pruning (sparsities)")
    findings = (tmp_path / "findings.md").read_text()
    for i, task in enumerate(("cola", "mrpc")):
        wins = sum(a > b for a, b in zip(CURVES[task]["imp"], CURVES[task]["random_pruning"]))
        assert beats[i] == f"{wins}/{len(SPARSITIES)}"
        assert summary["tasks"][task]["imp_vs_random_wins"] == [wins, len(SPARSITIES)]
        assert f"IMP beat random pruning at {wins} of {len(SPARSITIES)} sparsities" in findings
    assert beats[2] == "not run"
    assert f"CoLA: highest matching sparsity {100 * expected_matching('cola'):.0f}% vs the paper's 50%" in findings
    assert "MRPC: no matching IMP ticket at any sparsity reached (paper: 50%)" in findings

    # Transfer matrix: ✓ / ✗ by the target's band; the diagonal is the source's own IMP score.
    transfer = (tmp_path / "transfer.md").read_text()
    for source in ("mlm", "cola", "mrpc"):
        sparsity = source_sparsity(source)
        label = f"{TITLE[source]} ticket @ {100 * sparsity:.0f}%"
        label += "" if expected_matching(source) is not None else " (not matching on its own task)"
        cells = row(transfer, label)
        for j, target in enumerate(SETTINGS.tasks):
            if target == source:
                own = CURVES[source]["imp"][SPARSITIES.index(sparsity)]
                assert cells[j] == f"({own:.3f} own)"
                continue
            score = TRANSFERS[(source, target)]
            mark = "✓" if score >= full_stats(target)[0] - band(target) else "✗"
            assert cells[j] == f"{score:.3f} {mark}"
    marks = [(s >= full_stats(t)[0] - band(t)) for (src, t), s in TRANSFERS.items() if src != "mlm"]
    assert f"Task-to-task transfer: {sum(marks)} of {len(marks)} transferred tickets" in findings
    assert {True, False} <= set(marks)  # the fixture has both outcomes

    # Early bird: steps saved = IMP steps - early-bird steps over the rounds both finished.
    early = (tmp_path / "early_bird.md").read_text()
    imp, eb = sum(IMP_STEPS), sum(EB_STEPS)
    assert row(early, "CoLA")[:3] == [str(imp), str(eb), f"{imp - eb} ({100 * (imp - eb) / imp:.0f}%)"]
    assert "MLM" not in [line.split("|")[1].strip() for line in early.splitlines() if line.startswith("|")]
    # A ticket's score is its full training: retrained early-bird tickets plus the last round, never the
    # stopped rounds' own scores. CoLA's stopped rounds say 50% is in the band (0.41) and 70% is not (0.20);
    # trained fully it is the other way round.
    low = full_stats("cola")[0] - band("cola")
    assert expected_matching("cola") == 0.7 and CURVES["cola"]["early_bird"][1] >= low > CURVES["cola"]["early_bird"][2]
    assert row(early, "CoLA")[5:8] == ["70%", "50%: 0.350 ✗, 70%: 0.450 ✓, 90%: 0.100 ✗", "70%"]
    assert row(early, "MRPC")[5:8] == ["—", "50%: 0.715 ✓, 90%: 0.500 ✗", "50%"]
    assert summary["tasks"]["cola"]["early_bird_matching"]["sparsity"] == 0.7
    cola_rows = table2.split("### CoLA")[1].split("###")[0]
    assert [row(cola_rows, p)[-1] for p in ("20%", "50%", "70%", "90%")] == ["—", "0.350", "0.450", "0.100"]
    saved = 100 * (sum(IMP_STEPS) - sum(EB_STEPS)) / sum(IMP_STEPS)
    assert (
        f"CoLA early bird: {saved:.0f}% fewer training steps than IMP; its ticket at IMP's matching sparsity (70%), "
        f"trained fully, scores 0.450 (IMP's 0.420): matching too; highest matching early-bird sparsity of those "
        f"trained fully (50%, 70%, 90%): 70%."
    ) in findings


def test_partial_report_banner_and_progress(tmp_path):
    runs = build_runs(tmp_path)
    write_json(runs / "mrpc" / "early_bird" / "results.json", search_record("mrpc", "early_bird", n_rounds=3))
    folder = f"cola@{round(100 * source_sparsity('cola'))}__mrpc"
    (runs / "transfer" / folder / "transfer_results.json").unlink()
    summary = reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    assert summary["complete"] is False
    for name in ("table2.md", "transfer.md", "early_bird.md", "findings.md"):
        assert "> **Partial results**" in (tmp_path / name).read_text(), name
    progress = (tmp_path / "progress.md").read_text()
    n_runs = len(SETTINGS.tasks) * (len(SETTINGS.seeds) - 1 + 4) + 1 + len(TRANSFERS) + N_RETRAINED
    assert f"{n_runs - 2} of {n_runs} planned runs done." in progress
    assert row(progress, "mrpc/early_bird") == [f"partial (3/{len(SPARSITIES) + 1} rounds)"]
    assert row(progress, "transfer/cola->mrpc") == ["missing"]
    assert row(progress, "mrpc/imp") == ["done"]
    missing = {i["run"] for i in summary["progress"] if i["status"] != "done"}
    assert missing == {"mrpc/early_bird", "transfer/cola->mrpc"}
    # a partial early-bird run is compared on the rounds it finished, not counted as a saving
    imp, eb = sum(IMP_STEPS[:3]), sum(EB_STEPS[:3])
    assert row((tmp_path / "early_bird.md").read_text(), "MRPC")[:3] == [
        str(imp),
        str(eb),
        f"{imp - eb} ({100 * (imp - eb) / imp:.0f}%)",
    ]
    assert (
        row((tmp_path / "transfer.md").read_text(), f"CoLA ticket @ {100 * source_sparsity('cola'):.0f}%")[1]
        == "missing"
    )


def test_search_complete_only_with_every_round(tmp_path):
    run_dir = tmp_path / "runs" / "cola" / "imp"
    assert not reproduce_report.search_complete(run_dir, SETTINGS)
    for n in range(len(SPARSITIES) + 1):
        write_json(run_dir / "results.json", search_record("cola", "imp", n_rounds=n))
        assert not reproduce_report.search_complete(run_dir, SETTINGS)
    write_json(run_dir / "results.json", search_record("cola", "imp"))
    assert reproduce_report.search_complete(run_dir, SETTINGS)


class Trains(Exception):
    """Raised where a step would start training (it found no result)."""


def test_plan_skips_finished_runs_and_redoes_only_missing_ones(tmp_path, monkeypatch):
    from hf_tickets.core.ticket import Ticket

    runs = build_runs(tmp_path)
    repro = reproduce.Reproduction(SETTINGS, tmp_path)

    def trains(*args, **kwargs):
        raise Trains

    monkeypatch.setattr(repro, "task", trains)
    monkeypatch.setattr(Ticket, "from_pretrained", trains)

    def steps_that_train():
        started = []
        for label, step in repro.steps():
            try:
                step()
            except Trains:
                started.append(label)
        return started

    labels = [label for label, _ in repro.steps()]
    n_tasks = len(SETTINGS.tasks)
    assert len(labels) == n_tasks * (len(SETTINGS.seeds) - 1 + 5) + 1 + len(TRANSFERS) == len(set(labels))
    assert steps_that_train() == []  # everything exists: a rerun trains nothing

    write_json(runs / "cola" / "imp" / "results.json", search_record("cola", "imp", n_rounds=len(SPARSITIES)))
    write_json(runs / "mrpc" / "random_pruning" / "results.json", search_record("mrpc", "random_pruning", n_rounds=2))
    (runs / "mrpc" / "dense_seed43" / "all_results.json").unlink()
    (runs / "transfer" / f"mlm@{round(100 * source_sparsity('mlm'))}__mrpc" / "transfer_results.json").unlink()
    (runs / "mrpc" / "early_bird_retrain" / "50" / "transfer_results.json").unlink()
    assert steps_that_train() == [
        "cola imp",
        "mrpc dense seed 43",
        "mrpc random_pruning",
        "transfer mlm -> mrpc",
        "mrpc early-bird retrain",
    ]


def test_full_mode_budget_under_three_hours():
    full = reproduce.budget(reproduce.FULL)
    assert full["seconds"]["total"] < 10800 and full["hours_total"] < 3
    parts = full["seconds"]
    assert abs(sum(v for k, v in parts.items() if k != "total") - parts["total"]) <= 2
    n = len(reproduce.FULL.tasks)
    assert full["transfer_runs"] == n + n * (n - 1)  # MLM ticket to every task, every task's ticket to the others
    assert full["mlm_rounds"] == len(reproduce.FULL.sparsities) + 1
    # more rounds cost more: the estimate follows the plan, it is not a constant
    denser = dataclasses.replace(reproduce.FULL, sparsity_schedule=reproduce.FULL.sparsity_schedule + ",0.95")
    assert reproduce.budget(denser)["seconds"]["total"] > parts["total"]


def test_findings_flag_a_full_model_that_barely_learned_the_task(tmp_path, monkeypatch):
    monkeypatch.setitem(FULL, "cola", {42: 0.30, 43: 0.10, 44: 0.20})  # above chance, but seeds disagree
    build_runs(tmp_path)
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    findings = (tmp_path / "findings.md").read_text()
    assert "CoLA: caution, the full model barely learned the task at this scale (0.200 ± 0.100" in findings
    assert "chance level" not in findings
    assert "MRPC: caution" not in findings  # 0.72 ± 0.02: a usable band


def test_a_non_matching_source_transfers_the_scheduled_sparsity_nearest_the_papers(tmp_path):
    runs = build_runs(tmp_path)
    summaries = reproduce_report.summarise(runs, SETTINGS)
    assert reproduce_report.transfer_source_sparsity(summaries["mrpc"], SETTINGS) == (0.5, False)  # the paper's 50%
    without_half = dataclasses.replace(SETTINGS, sparsity_schedule="0.2,0.7,0.9")
    summaries = reproduce_report.summarise(runs, without_half)
    assert reproduce_report.transfer_source_sparsity(summaries["mrpc"], without_half) == (0.7, False)
    assert reproduce_report.transfer_source_sparsity(summaries["cola"], without_half)[1] is True  # its own match


def test_findings_flag_a_full_model_at_chance_level(tmp_path, monkeypatch):
    monkeypatch.setitem(FULL, "cola", {42: 0.116, 43: 0.0, 44: 0.008})  # what CoLA gave at this scale
    build_runs(tmp_path)
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    findings = (tmp_path / "findings.md").read_text()
    assert "CoLA: caution, the full model is at chance level (matthews_correlation 0.041 ± 0.065" in findings
    assert "barely learned" not in findings
    assert "MRPC: caution" not in findings  # accuracy's chance level is not 0: not judged here


def test_timings_add_up_over_resumptions_and_reach_the_progress_page(tmp_path):
    build_runs(tmp_path)
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    assert "No run timed yet" in (tmp_path / "progress.md").read_text()
    reproduce.add_timing(tmp_path, "cola imp", 100.0, 150.0)
    reproduce.add_timing(tmp_path, "cola imp", 260.0, 390.0)  # the same run, resumed
    reproduce.add_timing(tmp_path, "mrpc dense seed 43", 1000.0, 1700.0)
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["cola imp"] == {"wall_s": 360.0, "cpu_s": 540.0}
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    assert "Timed runs (2, timings.json): 0.38 h wall, 0.62 h CPU" in (tmp_path / "progress.md").read_text()


def test_eval_labels_give_the_constant_prediction_row_and_a_caution_near_it(tmp_path):
    import datasets

    runs = build_runs(tmp_path)
    reproduce.write_eval_labels(runs / "mrpc" / "eval_labels.json", datasets.Dataset.from_dict({"label": [1, 1, 1, 0]}))
    reproduce.write_eval_labels(runs / "stsb" / "eval_labels.json", datasets.Dataset.from_dict({"label": [0.5, 4.2]}))
    assert not (runs / "stsb" / "eval_labels.json").exists()  # regression: no majority label
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    cells = row((tmp_path / "table2.md").read_text(), "constant prediction (majority label; chance)")
    assert cells[:2] == ["0", "0.750"]  # CoLA's MCC is 0 at chance; MRPC's majority label is 3 of 4
    assert (
        "MRPC: caution, the full model (0.720) is below always predicting the majority label (0.750)"
        in (tmp_path / "findings.md").read_text()
    )

    for labels, caution in (
        ([1] * 71 + [0] * 29, "barely above always predicting the majority label (0.710)"),
        ([1, 0], None),
    ):
        reproduce.write_eval_labels(runs / "mrpc" / "eval_labels.json", datasets.Dataset.from_dict({"label": labels}))
        reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
        findings = (tmp_path / "findings.md").read_text()
        assert (
            (f"MRPC: caution, the full model (0.720) is {caution}" in findings)
            if caution
            else "MRPC: caution" not in findings
        )


# ------------------------------------------------------------------- second part (issue 17): claims and Table 3
import claims_report  # noqa: E402
import reproduce_claims  # noqa: E402
import table3_controls  # noqa: E402
from claims_report import ClaimSettings, Variant  # noqa: E402

CLAIMS = ClaimSettings(
    table3_sparsity=0.7,
    mlm_sparsity_schedule="0.2,0.5,0.7",
    calibrate_head_steps=10,
    rewind_fraction=0.05,
    claim_tasks=["cola", "mrpc"],
    variants=[Variant("cola_large", "cola", train_samples=100, eval_samples=50, epochs=1.0, learning_rate=1e-4)],
)
# IMP again (the masks re-init reuses) differs from the first IMP run by 0.01 everywhere: the noise floor.
AGAIN = {t: [v + 0.01 for v in CURVES[t]["imp"]] for t in ("cola", "mrpc")}
REINIT = {"cola": [0.30, 0.20, 0.10, 0.05], "mrpc": [0.60, 0.60, 0.60, 0.50]}
CALIBRATED_TRANSFERS = {"cola": 0.45, "mrpc": 0.60, "cola_large": 0.05}  # CoLA inside its band, MRPC below
LARGE_FULL = {42: 0.01, 43: 0.02, 44: -0.03}  # cola_large's full model at chance: not testable
# Table 3's controls (the same fine-tune, three tickets, three seeds): on CoLA the MLM ticket and CoLA's own ticket
# score alike (seed 42 of the MLM ticket is Table 3's run, 0.45); on MRPC the own ticket is far ahead.
CONTROLS = {
    ("cola", "mlm_calibrated"): {43: 0.44, 44: 0.40},
    ("cola", "own_imp"): {42: 0.43, 43: 0.47, 44: 0.39},
    ("cola", "theta0_magnitude"): {42: 0.41, 43: 0.42, 44: 0.40},
    ("mrpc", "mlm_calibrated"): {43: 0.62, 44: 0.58},
    ("mrpc", "own_imp"): {42: 0.70, 43: 0.71, 44: 0.69},
    ("mrpc", "theta0_magnitude"): {42: 0.68, 43: 0.69, 44: 0.70},
}


def rows_of(task, scores, round0, schedule=SPARSITIES, kind=None):
    return {
        "rounds": [
            {"round": i, "sparsity": s, "baseline": kind, METRIC[task]: v, "ticket": f"round_{i:02d}/ticket"}
            for i, (s, v) in enumerate(zip([0.0, *schedule], [round0, *scores]))
        ]
    }


def build_claim_runs(runs, theta_i=None):
    """Every second-part run folder; ``theta_i``: per task, the θ_i curve (default: the first IMP run's)."""
    theta_i = theta_i or {t: CURVES[t]["imp"] for t in ("cola", "mrpc")}
    write_json(
        runs / "mlm" / "imp_calibrated" / "results.json", rows_of("mlm", [0.52, 0.5, 0.45], 0.53, [0.2, 0.5, 0.7])
    )
    write_json(
        runs / "mlm" / "imp_calibrated" / "head_calibration.json",
        {
            "steps": 30,
            "plateaued": True,
            "curve": [{"step": 0, "accuracy": 0.0, "loss": 10.0}, {"step": 30, "accuracy": 0.07, "loss": 7.0}],
        },
    )
    for task in ("cola", "mrpc"):
        round0 = FULL[task][42]
        write_json(runs / task / "imp_rewind_step" / "results.json", rows_of(task, theta_i[task], round0))
        write_json(runs / task / "imp_masks" / "results.json", rows_of(task, AGAIN[task], round0))
        write_json(
            runs / task / "random_reinit" / "results.json", rows_of(task, REINIT[task], 0.0, kind="random_reinit")
        )
    large = runs / "cola_large"
    for seed in (43, 44):
        write_json(large / f"dense_seed{seed}" / "all_results.json", {METRIC["cola"]: LARGE_FULL[seed], "seed": seed})
    write_json(large / "imp" / "results.json", rows_of("cola", [0.02, 0.0, 0.01], LARGE_FULL[42], [0.2, 0.5, 0.7]))
    write_json(large / "random_pruning" / "results.json", rows_of("cola", [0.0], 0.0, [0.7], kind="random_pruning"))
    for target, score in CALIBRATED_TRANSFERS.items():
        metric = METRIC["cola" if target == "cola_large" else target]
        write_json(
            runs / "transfer" / claims_report.table3_transfer_dir(target, 0.7) / "transfer_results.json",
            {"task": target, "main_metric": metric, "metrics": {metric: score}},
        )
    for (target, source), scores in CONTROLS.items():
        for seed, score in scores.items():
            write_json(
                table3_controls.control_dir(runs, source, target, 0.7, seed, SETTINGS.imp_seed)
                / "transfer_results.json",
                {"task": target, "main_metric": METRIC[target], "metrics": {METRIC[target]: score}},
            )


def claim(statements, name):
    return next(c for c in statements if c["claim"].startswith(name))


def test_claims_and_table3_from_synthetic_runs(tmp_path):
    runs = build_runs(tmp_path)
    build_claim_runs(runs)
    result = claims_report.write_claims_report(tmp_path, SETTINGS, CLAIMS, "python benchmarks/reproduce.py")
    table = (tmp_path / "table3.md").read_text()
    assert "| | MRPC | CoLA | CoLA (3,000 ex.) |" in table
    assert row(table, "**MLM ticket, calibrated head @ 70%**") == ["0.600", "0.450", "0.050"]
    assert row(table, "the task's own IMP ticket @ 70%") == [f"{CURVES['mrpc']['imp'][2]:.3f}", "0.420", "0.010"]
    assert row(table, "random pruning @ 70%") == ["0.500", "0.100", "0.000"]
    assert row(table, "verdict (MLM ticket, calibrated)") == [
        "does not match (above random pruning)",
        "transfers (matching)",
        "not testable (full model within one std of chance)",
    ]
    assert "masked-token accuracy by step: 0: 0.000, 30: 0.070" in table
    # The MLM search under both protocols, sparsity by sparsity (the fresh head's first-part run went to 90%).
    assert row(table, "70%") == ["0.300", "0.450"] and row(table, "90%") == ["0.100", "—"]

    statements = result["claims"]
    reinit = claim(statements, "IMP beats random re-initialisation")
    assert reinit["verdict"] == "reproduced"
    assert "CoLA: IMP above random re-init at 4 of 4 sparsities" in reinit["evidence"][0]
    rewind = claim(statements, "Rewinding to θ_i")
    assert rewind["verdict"] == "reproduced"  # θ_i equals the first θ0 run: no gain beyond two θ0 runs' spread
    assert "two θ0 runs differ by 0.010" in rewind["evidence"][0]
    transfer = claim(statements, "MLM tickets transfer")
    assert "matching on 1 of 2 testable targets (CoLA)" in transfer["evidence"][0]
    assert transfer["verdict"] == "not reproduced"  # 1 of 2 is not "most"
    (runs / "transfer" / claims_report.table3_transfer_dir("cola_large", 0.7) / "transfer_results.json").unlink()
    transfer = claim(claims_report.claims_statements(runs, SETTINGS, CLAIMS), "MLM tickets transfer")
    assert transfer["verdict"] == "not reproduced so far (1 targets pending: CoLA (3,000 ex.))"
    matching = claim(statements, "IMP finds matching")
    assert any("CoLA (3,000 ex.): not testable" in e for e in matching["evidence"])
    claims_md = (tmp_path / "claims.md").read_text()
    assert all(c["claim"] in claims_md for c in statements) and "`python benchmarks/reproduce.py`" in claims_md


def test_rewinding_to_theta_i_that_helps_is_not_reproduced(tmp_path):
    runs = build_runs(tmp_path)
    better = [v + 0.2 for v in CURVES["mrpc"]["imp"]]  # clearly above both θ0 runs, matching up to 90%
    build_claim_runs(runs, theta_i={"cola": CURVES["cola"]["imp"], "mrpc": better})
    rewind = claim(claims_report.claims_statements(tmp_path / "runs", SETTINGS, CLAIMS), "Rewinding to θ_i")
    assert rewind["verdict"] == "not reproduced"
    assert any("MRPC: θ_i minus θ0 +0.19" in e and "θ_i 90%, θ0 —" in e for e in rewind["evidence"])


def test_claims_pending_without_second_part_runs_and_first_part_tables_unchanged(tmp_path):
    runs = build_runs(tmp_path)
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    names = ("table2.md", "transfer.md", "early_bird.md", "findings.md")
    before = {n: (tmp_path / n).read_bytes() for n in names}
    result = claims_report.write_claims_report(tmp_path, SETTINGS, CLAIMS)
    for name in ("IMP beats random re-initialisation", "Rewinding to θ_i", "MLM tickets transfer"):
        assert claim(result["claims"], name)["verdict"] == "not testable here (yet: runs pending)"
    assert set(row((tmp_path / "table3.md").read_text(), "verdict (MLM ticket, calibrated)")) == {"pending"}

    build_claim_runs(runs)  # the second part's folders change none of the first part's tables
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    assert {n: (tmp_path / n).read_bytes() for n in names} == before


def test_second_part_plan_skips_finished_runs(tmp_path, monkeypatch):
    from tiny import tiny_model
    from transformers import BertForMaskedLM

    from hf_tickets import prune
    from hf_tickets.experiments import experiment

    runs = build_runs(tmp_path)
    build_claim_runs(runs)
    # The MLM ticket's masks: the runs' are never committed, the artefact keeps a copy (what a clone has)
    prune(tiny_model(BertForMaskedLM), CLAIMS.table3_sparsity).save_pretrained(tmp_path / "mlm_ticket")
    repro = reproduce.Reproduction(SETTINGS, tmp_path, CLAIMS)

    def trains(*args, **kwargs):
        raise Trains

    for name in ("task", "glue_task"):
        monkeypatch.setattr(repro, name, trains)
    for name in ("run_imp_search", "fine_tune", "transfer", "load_theta0"):
        monkeypatch.setattr(experiment, name, trains)

    def started():
        out = []
        for label, step in repro.claim_runs.steps():
            try:
                step()
            except Trains:
                out.append(label)
        return out

    labels = [label for label, _ in repro.claim_runs.steps()]
    # TABLE3 targets (sst2/stsb absent here), claim runs, controls (3 tickets x 3 seeds but Table 3's own), variant
    assert len(labels) == len(set(labels)) == 1 + 4 + 3 * 2 + 2 * (3 * 3 - 1) + 5
    # Everything else exists: only the transfers to SST-2 and STS-B (tasks these settings never ran) would train.
    absent = ["transfer mlm (calibrated) -> sst2", "transfer mlm (calibrated) -> stsb"]
    assert started() == absent

    (runs / "mrpc" / "random_reinit" / "results.json").write_text(json.dumps(rows_of("mrpc", [0.6], 0.0)))
    (runs / "cola_large" / "dense_seed43" / "all_results.json").unlink()
    assert started() == [*absent, "mrpc random_reinit", "cola_large dense seed 43"]
    progress = repro.claim_runs.progress_markdown("CMD")
    assert "| mrpc random_reinit | pending |" in progress and "| cola imp_rewind_step | done |" in progress


def test_rewind_step_is_a_few_percent_of_round_zero():
    repro = SimpleNamespace(settings=reproduce.FULL)
    runs = reproduce_claims.ClaimRuns(repro, reproduce_claims.CLAIMS)
    assert runs.rewind_steps("sst2") == round(0.05 * 63 * 2)  # 1,000 examples, batch 16, 2 epochs
    assert runs.rewind_steps("stsb") == 5  # 800 examples: 50 steps x 2 epochs


def test_second_part_budget_within_three_hours_and_follows_the_plan():
    args = (reproduce.FULL, reproduce.MEASURED_TRAIN_MS, reproduce.EVAL_MS_PER_EXAMPLE, reproduce.OVERHEAD_S_PER_RUN)
    budget = reproduce_claims.claim_budget(reproduce_claims.CLAIMS, *args)
    assert budget["total_s"] < 3 * 3600 and budget["hours_total"] < 3
    assert abs(sum(budget["seconds"].values()) - budget["total_s"]) <= len(budget["seconds"])
    more = dataclasses.replace(
        reproduce_claims.CLAIMS,
        variants=[dataclasses.replace(v, train_samples=2 * v.train_samples) for v in reproduce_claims.CLAIMS.variants],
    )
    assert reproduce_claims.claim_budget(more, *args)["total_s"] > budget["total_s"]


def test_squad_split_by_article_shares_no_context(tmp_path):
    source = tmp_path / "xquad.json"
    articles = [{"title": f"a{i}", "paragraphs": [{"context": f"context {i}", "qas": []}]} for i in range(8)]
    source.write_text(json.dumps({"version": "1.1", "data": articles}))
    train, dev = reproduce_claims.split_squad_by_article(source, tmp_path / "split", eval_share=0.25, seed=0)
    titles = [{a["title"] for a in json.loads(p.read_text())["data"]} for p in (train, dev)]
    assert len(titles[1]) == 2 and not titles[0] & titles[1] and titles[0] | titles[1] == {f"a{i}" for i in range(8)}
    again = reproduce_claims.split_squad_by_article(source, tmp_path / "again", eval_share=0.25, seed=0)
    assert again[1].read_text() == dev.read_text()  # fixed seed: the same split in every session


def test_only_runs_the_steps_it_names_so_a_second_process_can_take_others(tmp_path, monkeypatch):
    repro = reproduce.Reproduction(SETTINGS, tmp_path)
    ran = []
    monkeypatch.setattr(repro, "steps", lambda: iter([(lab, lambda lab=lab: ran.append(lab)) for lab in LABELS]))
    monkeypatch.setattr(repro, "report", lambda: None)
    repro.run(only=["stsb", "mlm imp"])
    assert ran == ["stsb imp", "transfer mlm -> stsb", "mlm imp"]
    ran.clear()
    repro.run()
    assert ran == LABELS


LABELS = ["cola imp", "stsb imp", "transfer mlm -> stsb", "mlm imp", "sst2 imp"]


def test_an_unfinished_run_without_its_theta0_starts_again_and_a_resumable_or_finished_one_stays(tmp_path):
    lost, resumable, finished = tmp_path / "lost", tmp_path / "resumable", tmp_path / "finished"
    for run in (lost, resumable, finished):
        write_json(run / "imp_state.json", {"round": 3})
        write_json(run / "results.json", {"rounds": []})
    (resumable / "theta0.safetensors").write_bytes(b"weights")
    assert reproduce_report.restart_if_weights_lost(lost) and not lost.exists()  # a fresh clone: θ0 not committed
    assert not reproduce_report.restart_if_weights_lost(resumable) and (resumable / "results.json").is_file()
    (finished / "imp_state.json").unlink()  # not an IMP run folder any more: nothing to judge
    assert not reproduce_report.restart_if_weights_lost(finished) and finished.exists()
    assert not reproduce_report.restart_if_weights_lost(tmp_path / "never-started")


def test_a_task_whose_imp_has_only_its_full_model_round_is_pending_not_a_failed_search():
    def summary(task, rows):
        return reproduce_report.TaskSummary(
            task, "eval_accuracy", {42: 0.8, 43: 0.81}, 0.805, 0.007, {"imp": rows}, {"sparsity": None}, {}
        )

    full = {"round": 0, "sparsity": 0.0, "eval_accuracy": 0.8}
    pruned = {"round": 1, "sparsity": 0.1, "eval_accuracy": 0.801}
    matched = summary("sst2", [full, pruned])
    matched.imp_matching = {"sparsity": 0.1}
    claim = claims_report._claim_matching({"sst2": matched, "squad": summary("squad", [full])}, [])
    assert claim["evidence"][0] == "matching tickets on 1 of 1 testable tasks"  # squad is not counted as failed
    assert any(e.startswith("SQuAD") and "IMP pending" in e for e in claim["evidence"])
    assert claim["verdict"] == "reproduced"


def test_the_mlm_transfers_use_the_artefacts_masks_when_the_runs_are_not_here(tmp_path):
    """A clone holds the MLM run's results but not its masks (not committed): the transfers read the artefact's
    copy (the crash this fixes: 'round_07/ticket is not a ticket: ticket_masks.safetensors is missing')."""
    from tiny import tiny_model
    from transformers import BertForMaskedLM

    from hf_tickets import prune
    from hf_tickets.core.ticket import Ticket

    runs = build_runs(tmp_path)
    build_claim_runs(runs)
    plan = reproduce_claims.ClaimRuns(SimpleNamespace(runs_dir=runs, settings=SETTINGS), CLAIMS)
    assert plan.mlm_ticket_dir() is None  # neither the run's masks nor an artefact: nothing to transfer yet
    ticket = prune(tiny_model(BertForMaskedLM), CLAIMS.table3_sparsity)
    ticket.save_pretrained(tmp_path / "mlm_ticket")
    assert plan.mlm_ticket_dir() == tmp_path / "mlm_ticket"
    assert Ticket.from_pretrained(plan.mlm_ticket_dir()).equals(ticket)
    row = reproduce_report.row_at(reproduce_report.search_rows(runs / "mlm" / "imp_calibrated"), 0.7)
    ticket.save_pretrained(runs / "mlm" / "imp_calibrated" / row["ticket"])
    assert plan.mlm_ticket_dir() == runs / "mlm" / "imp_calibrated" / row["ticket"]  # the run's own, when present


def test_findings_count_transfers_only_on_targets_whose_full_model_beats_chance(tmp_path, monkeypatch):
    # CoLA's full model at chance (MCC 0.0 ± 0.05): the MLM ticket and MRPC's ticket land in its wide band, which
    # says nothing; the findings count transfers only where the full model is more than one std above chance.
    monkeypatch.setitem(FULL, "cola", {42: 0.05, 43: -0.05, 44: 0.0})
    monkeypatch.setitem(TRANSFERS, ("mlm", "cola"), 0.01)
    monkeypatch.setitem(TRANSFERS, ("mrpc", "cola"), 0.02)
    build_runs(tmp_path)
    reproduce_report.write_report(tmp_path, SETTINGS, plots=False)
    findings = (tmp_path / "findings.md").read_text()
    mrpc_low = full_stats("mrpc")[0] - band("mrpc")
    mlm_mrpc = int(TRANSFERS[("mlm", "mrpc")] >= mrpc_low)
    assert (
        f"MLM ticket transfer (universality): matching on {mlm_mrpc} of 1 testable tasks; "
        "not testable (full model within one std of chance): CoLA." in findings
    )
    cola_mrpc = int(TRANSFERS[("cola", "mrpc")] >= mrpc_low)
    assert f"Task-to-task transfer: {cola_mrpc} of 1 transferred tickets were matching on a testable target" in findings


def test_table3_controls_say_whether_the_mlm_tickets_gap_is_inside_the_seeds_spread(tmp_path):
    runs = build_runs(tmp_path)
    build_claim_runs(runs)
    result = claims_report.write_claims_report(tmp_path, SETTINGS, CLAIMS)
    controls = (tmp_path / "table3.md").read_text().split("## Controls")[1]
    scores = {key: dict(v) for key, v in CONTROLS.items()}
    for target in ("cola", "mrpc"):  # seed 42 of the MLM ticket is Table 3's own transfer
        scores[(target, "mlm_calibrated")][42] = CALIBRATED_TRANSFERS[target]
    stats = {key: (statistics.fmean(v.values()), statistics.stdev(v.values())) for key, v in scores.items()}
    for label, source in (
        ("MLM ticket (calibrated head) @ 70%", "mlm_calibrated"),
        ("the task's own IMP ticket @ 70%", "own_imp"),
        ("θ0's magnitude ticket (no training) @ 70%", "theta0_magnitude"),
    ):
        assert row(controls, label) == [
            f"{stats[(t, source)][0]:.3f} ± {stats[(t, source)][1]:.3f} (3 seeds)" for t in ("cola", "mrpc")
        ]
    for label, other in (
        ("MLM ticket minus own ticket", "own_imp"),
        ("MLM ticket minus θ0's magnitude ticket", "theta0_magnitude"),
    ):
        for cell, target in zip(row(controls, label), ("cola", "mrpc")):
            (mlm, mlm_std), (own, own_std) = stats[(target, "mlm_calibrated")], stats[(target, other)]
            inside = abs(mlm - own) <= max(mlm_std, own_std)
            assert cell == f"{mlm - own:+.3f} ({'within' if inside else 'outside'} the seeds' spread)"
    gaps = row(controls, "MLM ticket minus own ticket")
    assert gaps[0].endswith("(within the seeds' spread)") and gaps[1].endswith("(outside the seeds' spread)")
    evidence = claim(result["claims"], "MLM tickets transfer")["evidence"]
    assert any(e.startswith("MRPC: MLM ticket minus the task's own ticket, same fine-tune, 3 seeds:") for e in evidence)

    (runs / "controls" / "own_imp@70__mrpc__seed44" / "transfer_results.json").unlink()
    claims_report.write_claims_report(tmp_path, SETTINGS, CLAIMS)
    controls = (tmp_path / "table3.md").read_text().split("## Controls")[1]
    assert row(controls, "MLM ticket minus own ticket")[1].endswith("(outside the seeds' spread)")  # 2 seeds left
    assert row(controls, "the task's own IMP ticket @ 70%")[1].endswith("(2 seeds)")


def test_mask_overlap_compares_the_tickets_that_are_here_and_names_the_missing(tmp_path):
    import mask_overlap
    from tiny import tiny_model
    from transformers import BertForMaskedLM, BertModel

    from hf_tickets import prune

    runs = tmp_path / "runs"
    model = tiny_model(BertModel)
    shared = prune(model, 0.7)
    for folder in ("sst2/imp_masks", "stsb/imp_masks"):
        write_json(runs / folder / "results.json", rows_of("mrpc", [0.5], 0.6, [0.7]))
        shared.save_pretrained(runs / folder / "round_01" / "ticket")
    # The MLM run's masks are gone (a clone): the artefact's copy stands in.
    write_json(runs / "mlm" / "imp_calibrated" / "results.json", rows_of("mlm", [0.5], 0.6, [0.7]))
    prune(tiny_model(BertForMaskedLM), 0.7, strategy="random").save_pretrained(tmp_path / "mlm_ticket")
    tickets = mask_overlap.gather(tmp_path, theta0_model=model)
    assert list(tickets) == ["MLM (calibrated head)", "SST-2 IMP", "STS-B IMP", "θ0 magnitude (no training)"]
    page = mask_overlap.write_page(tickets, tmp_path / "mask_overlap.md").read_text()
    assert row(page, "SST-2 IMP")[:4] == ["STS-B IMP", "0.700", "0.700", "1.000"]  # the same ticket saved twice
    assert row(page, "STS-B IMP")[:4] == ["θ0 magnitude (no training)", "0.700", "0.700", "1.000"]
    assert "Not here (masks not in this checkout): MRPC (1,600 ex.) IMP, MRPC (1,600 ex.) random pruning." in page


def test_a_full_model_far_below_its_imp_tickets_is_flagged_in_the_matching_claim(tmp_path, monkeypatch):
    # The SQuAD subset did this: tickets at 10-60% scored F1 17-28 against the full model's 11.3 ± 0.5.
    monkeypatch.setitem(FULL, "mrpc", {42: 0.40, 43: 0.42, 44: 0.41})
    runs = build_runs(tmp_path)
    build_claim_runs(runs)
    evidence = claim(claims_report.claims_statements(runs, SETTINGS, CLAIMS), "IMP finds matching")["evidence"]
    mean, std = full_stats("mrpc")
    assert max(CURVES["mrpc"]["imp"]) > mean + 3 * std
    assert (
        f"MRPC: caution, IMP tickets score up to {max(CURVES['mrpc']['imp']):.3f} against the full model's "
        f"{mean:.3f} ± {std:.3f}: the full model is weak at these settings, so matching it says little"
    ) in evidence
    cola_mean, cola_std = full_stats("cola")
    assert max(CURVES["cola"]["imp"]) <= cola_mean + 3 * cola_std
    assert not any(e.startswith("CoLA: caution") for e in evidence)
    entries = claims_report.table3(runs, SETTINGS, CLAIMS, reproduce_report.summarise(runs, SETTINGS))
    verdicts = {e["target"]: e["verdict"] for e in entries}
    assert verdicts["mrpc"] == "transfers (matching) (caution: IMP tickets score far above this full model)"
    assert verdicts["cola"] == "transfers (matching)"


def test_a_step_another_process_is_running_is_skipped_not_run_twice(tmp_path, monkeypatch, caplog):
    # Two --only processes whose texts both name a step (e.g. "squad" and "-> squad") once ran the same SQuAD
    # transfer into one folder at once: a transfer has no IMP lock. Every step now holds its own lock.
    repro = reproduce.Reproduction(SETTINGS, tmp_path)
    ran = []
    monkeypatch.setattr(repro, "steps", lambda: iter([(lab, lambda lab=lab: ran.append(lab)) for lab in LABELS]))
    monkeypatch.setattr(repro, "report", lambda: None)
    with reproduce.step_lock(tmp_path, "transfer mlm -> stsb") as held:
        assert held
        with caplog.at_level("INFO", logger="reproduce"):
            repro.run(only=["stsb"])
    assert ran == ["stsb imp"]
    assert "transfer mlm -> stsb: in use by another process, skipped" in caplog.text
    repro.run(only=["stsb"])  # released: it runs
    assert ran == ["stsb imp", "stsb imp", "transfer mlm -> stsb"]
