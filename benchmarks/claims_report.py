"""The paper's claims, each stated as reproduced / not reproduced / not testable here, and its Table 3.

Reads run folders only (a stopped run gives a partial report; the tests feed it synthetic folders). The
second part's folders (``reproduce_claims.py``), beside the first part's (``reproduce_report.py``):

    mlm/imp_calibrated/                  IMP on MLM from encoder + calibrated head (head_calibration.json)
    <task>/imp_rewind_step/              IMP rewinding to θ_i (claim 3), sst2 and stsb
    <task>/imp_masks/                    IMP rewinding to θ0 again: the masks random re-init reuses
    <task>/random_reinit/                IMP's masks, fresh random weights
    <variant>/dense_seed<S>/, imp/, random_pruning/, eval_labels.json
                                         squad, mrpc_large, cola_large: the Table 3 sparsity only
    transfer/mlm_calibrated@<pct>__<target>/transfer_results.json

Evidence rule (issue 17): a task whose full model is within one std of chance (0 for correlations, F1 0
for SQuAD) or of the majority label cannot support a claim: its claims are "not testable".
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reproduce_report import (
    LABELS_FILE,
    MAIN_METRICS,
    MLM,
    SEARCH_KINDS,
    TASK_TITLES,
    TaskSummary,
    chance_level,
    fmt,
    full_model_scores,
    matching,
    mean_std,
    pct,
    pruned_rows,
    read_json,
    read_transfers,
    row_at,
    score_matches,
    search_rows,
    summarise,
    testable,
    transfer_dir_name,
)
from table3_controls import control_table, controls_markdown, gap_text

from hf_tickets.training.results import greater_is_better

CALIBRATED = "imp_calibrated"
CLAIM_KINDS = ("imp_rewind_step", "imp_masks", "random_reinit")
TABLE3_TARGETS = ("sst2", "stsb", "mrpc", "cola")
VARIANT_TITLES = {"squad": "SQuAD subset", "mrpc_large": "MRPC (1,600 ex.)", "cola_large": "CoLA (3,000 ex.)"}
METRICS = {**MAIN_METRICS, "squad": "eval_f1"}
VERDICTS = ("reproduced", "not reproduced", "not testable here")
#: A pruned round this many full-model stds above the full model means the dense fine-tune is the weak one.
WEAK_FULL_MODEL_STDS = 3


@dataclass
class Variant:
    """A task run with its own data size (more data than the first part, or SQuAD); folder ``runs/<name>``."""

    name: str
    task: str
    train_samples: int
    eval_samples: int
    epochs: float
    learning_rate: float


@dataclass
class ClaimSettings:
    table3_sparsity: float
    mlm_sparsity_schedule: str
    calibrate_head_steps: int
    rewind_fraction: float
    claim_tasks: list[str]
    variants: list[Variant]
    squad_max_seq_length: int = 256
    squad_doc_stride: int = 64
    notes: list[str] = field(default_factory=list)

    @property
    def mlm_sparsities(self) -> list[float]:
        return [float(x) for x in self.mlm_sparsity_schedule.split(",")]

    @property
    def table3_schedule(self) -> str:
        """The first part's schedule up to the Table 3 sparsity (IMP for the variants)."""
        return ",".join(x for x in self.mlm_sparsity_schedule.split(",") if float(x) <= self.table3_sparsity + 1e-9)

    def to_dict(self) -> dict:
        return asdict(self)


def rows_complete(run_dir: Path, schedule: str) -> bool:
    return len(search_rows(run_dir)) == len(schedule.split(",")) + 1


def table3_transfer_dir(target: str, sparsity: float) -> str:
    return transfer_dir_name("mlm_calibrated", sparsity, target)


def variant_of(claims: ClaimSettings, name: str) -> Variant | None:
    return next((v for v in claims.variants if v.name == name), None)


# ------------------------------------------------------------------------------- summaries
def summarise_variant(runs_dir: Path, v: Variant, settings) -> TaskSummary:
    """A variant read like a first-part task: full model over the seeds, IMP and random pruning rows."""
    task_dir, metric = runs_dir / v.name, METRICS[v.task]
    scores = full_model_scores(task_dir, metric, settings)
    mean, std = mean_std(list(scores.values()))
    rows = {kind: search_rows(task_dir / kind) for kind in SEARCH_KINDS}
    labels = read_json(task_dir / LABELS_FILE) or {}
    return TaskSummary(
        v.name,
        metric,
        scores,
        mean,
        std,
        rows,
        matching(rows["imp"], metric, mean, std),
        {},
        labels.get("majority_share"),
    )


def claim_rows(runs_dir: Path, task: str, kind: str) -> list[dict]:
    return search_rows(runs_dir / task / kind)


def pruned_pairs(a: list[dict], b: list[dict], metric: str) -> list[tuple[float, float, float]]:
    """(sparsity, a's score, b's score) at every pruned sparsity both runs reached."""
    out = []
    for row in a:
        other = row_at(b, row["sparsity"])
        if row["sparsity"] > 0 and other is not None and row.get(metric) is not None and other.get(metric) is not None:
            out.append((row["sparsity"], float(row[metric]), float(other[metric])))
    return out


# ---------------------------------------------------------------------------------- Table 3
def table3(runs_dir: Path, settings, claims: ClaimSettings, summaries: dict[str, TaskSummary]) -> list[dict]:
    """One entry per target task: full model, MLM tickets (calibrated / fresh head), own ticket, random pruning."""
    sparsity = claims.table3_sparsity
    fresh = {t["target"]: t for t in read_transfers(runs_dir, summaries, settings) if t["source"] == MLM}
    entries = []
    for target in [*TABLE3_TARGETS, *(v.name for v in claims.variants)]:
        v = variant_of(claims, target)
        s = summarise_variant(runs_dir, v, settings) if v else summaries.get(target)
        if s is None:
            continue
        record = read_json(runs_dir / "transfer" / table3_transfer_dir(target, sparsity) / "transfer_results.json")
        calibrated = None if record is None else record["metrics"].get(s.metric)
        old = fresh.get(target)
        fresh_score = (
            old["score"] if old and old["sparsity"] is not None and abs(old["sparsity"] - sparsity) < 1e-6 else None
        )
        entry = {
            "target": target,
            "title": VARIANT_TITLES.get(target) or TASK_TITLES.get(target, target),
            "metric": s.metric,
            "full_mean": s.full_mean,
            "full_std": s.full_std,
            "chance": chance_level(s) if s.full_mean is not None else None,
            "mlm_calibrated": calibrated,
            "mlm_fresh_head": fresh_score,
            "own_ticket": s.score("imp", sparsity),
            "random_pruning": s.score("random_pruning", sparsity),
            "testable": testable(s),
        }
        entry["verdict"] = table3_verdict(entry, s)
        entries.append(entry)
    return entries


def table3_verdict(e: dict, s: TaskSummary) -> str:
    if e["full_mean"] is None or e["mlm_calibrated"] is None:
        return "pending"
    if not e["testable"]:
        return "not testable (full model within one std of chance)"
    if score_matches(s, e["mlm_calibrated"]):
        weak = " (caution: IMP tickets score far above this full model)" if weak_full_model_caution(s) else ""
        return "transfers (matching)" + weak
    above = e["random_pruning"] is not None and e["mlm_calibrated"] > e["random_pruning"]
    return "does not match" + (" (above random pruning)" if above else "")


def table3_markdown(entries: list[dict], claims: ClaimSettings) -> str:
    cols = entries
    lines = ["| | " + " | ".join(e["title"] for e in cols) + " |", "|---|" + "---:|" * len(cols)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(e) for e in cols) + " |")

    def full(e):
        if e["full_mean"] is None:
            return "—"
        return f"{e['full_mean']:.3f}" + (f" ± {e['full_std']:.3f}" if e["full_std"] is not None else "")

    sp = pct(claims.table3_sparsity)
    row("metric", lambda e: e["metric"].removeprefix("eval_"))
    row("full model (mean ± std over seeds)", full)
    row("chance / majority label", lambda e: fmt(e["chance"]))
    row(f"**MLM ticket, calibrated head @ {sp}**", lambda e: fmt(e["mlm_calibrated"]))
    row(f"MLM ticket, fresh head (first part) @ {sp}", lambda e: fmt(e["mlm_fresh_head"]))
    row(f"the task's own IMP ticket @ {sp}", lambda e: fmt(e["own_ticket"]))
    row(f"random pruning @ {sp}", lambda e: fmt(e["random_pruning"]))
    row("verdict (MLM ticket, calibrated)", lambda e: e["verdict"])
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ claims
def claims_statements(runs_dir: Path, settings, claims: ClaimSettings) -> list[dict]:
    """Each of the paper's claims: verdict and the numbers behind it."""
    summaries = summarise(runs_dir, settings)
    variants = {v.name: summarise_variant(runs_dir, v, settings) for v in claims.variants}
    tasks = {**{t: summaries[t] for t in settings.tasks}, **variants}
    ok = {t: s for t, s in tasks.items() if testable(s)}
    untestable = [t for t, s in tasks.items() if s.full_mean is not None and not testable(s)]
    out = [_claim_matching(ok, untestable), _claim_random_pruning(ok, untestable)]
    out.append(_claim_reinit(runs_dir, claims, tasks))
    out.append(_claim_rewind(runs_dir, claims, tasks))
    out.append(_claim_standard(ok, untestable))
    out.append(_claim_transfer(runs_dir, settings, claims, summaries, ok))
    return out


def _title(t: str) -> str:
    return VARIANT_TITLES.get(t) or TASK_TITLES.get(t, t)


def _missing(evidence: list[str]) -> str:
    """No verdict: runs that exist were all on untestable tasks, or the runs are still to come."""
    return "not testable here" if evidence else "not testable here (yet: runs pending)"


def _claim(name: str, verdict: str, evidence: list[str]) -> dict:
    return {"claim": name, "verdict": verdict, "evidence": evidence}


def weak_full_model_caution(s: TaskSummary) -> str | None:
    """A full model that a pruned IMP round beats by more than 3 of its stds: the dense fine-tune is weak at these
    settings (a ticket trains the same way with fewer weights), so being within its band is no achievement."""
    scores = [r[s.metric] for r in pruned_rows(s.rows["imp"]) if r.get(s.metric) is not None]
    if not scores or s.full_mean is None or s.full_std is None:
        return None
    sign = 1 if greater_is_better(s.metric) else -1
    best = max(scores, key=lambda v: sign * v)
    if sign * (best - s.full_mean) <= WEAK_FULL_MODEL_STDS * s.full_std:
        return None
    return (
        f"caution, IMP tickets score up to {best:.3f} against the full model's {s.full_mean:.3f} ± {s.full_std:.3f}: "
        "the full model is weak at these settings, so matching it says little"
    )


def _claim_matching(ok: dict[str, TaskSummary], untestable: list[str]) -> dict:
    evidence = []
    found = []
    for t, s in ok.items():
        if not pruned_rows(s.rows["imp"]):  # round 0 alone is the full model: no ticket to judge yet
            if s.rows["imp"]:
                evidence.append(f"{_title(t)}: IMP pending (full {s.full_mean:.3f}; no pruned round yet)")
            continue
        sp = s.imp_matching.get("sparsity")
        found.append(sp is not None)
        evidence.append(f"{_title(t)}: highest matching sparsity {pct(sp)} (full {s.full_mean:.3f})")
        if (caution := weak_full_model_caution(s)) is not None:
            evidence.append(f"{_title(t)}: {caution}")
    evidence += [f"{_title(t)}: not testable (full model at chance)" for t in untestable]
    if not found:
        return _claim("IMP finds matching subnetworks", "not testable here", evidence)
    verdict = "reproduced" if sum(found) > len(found) / 2 else "not reproduced"
    return _claim(
        "IMP finds matching subnetworks",
        verdict,
        [f"matching tickets on {sum(found)} of {len(found)} testable tasks", *evidence],
    )


def _claim_random_pruning(ok: dict[str, TaskSummary], untestable: list[str]) -> dict:
    wins = total = 0
    evidence = []
    for t, s in ok.items():
        pairs = pruned_pairs(s.rows["imp"], s.rows["random_pruning"], s.metric)
        if not pairs:
            continue
        w = sum(a > b for _, a, b in pairs)
        wins, total = wins + w, total + len(pairs)
        evidence.append(f"{_title(t)}: IMP above random pruning at {w} of {len(pairs)} sparsities")
    if not total:
        return _claim("IMP beats random pruning", "not testable here", evidence or ["no testable runs yet"])
    verdict = "reproduced" if wins > 0.75 * total else "not reproduced"
    return _claim("IMP beats random pruning", verdict, [f"{wins} of {total} (task, sparsity) pairs", *evidence])


def _claim_reinit(runs_dir: Path, claims: ClaimSettings, tasks: dict[str, TaskSummary]) -> dict:
    wins = total = 0
    evidence = []
    for t in claims.claim_tasks:
        s = tasks[t]
        pairs = pruned_pairs(claim_rows(runs_dir, t, "imp_masks"), claim_rows(runs_dir, t, "random_reinit"), s.metric)
        if not pairs:
            continue
        if not testable(s):
            evidence.append(f"{_title(t)}: not testable (full model at chance)")
            continue
        w = sum(a > b for _, a, b in pairs)
        wins, total = wins + w, total + len(pairs)
        gap = statistics.fmean(a - b for _, a, b in pairs)
        evidence.append(
            f"{_title(t)}: IMP above random re-init at {w} of {len(pairs)} sparsities (mean gap {gap:+.3f})"
        )
    if not total:
        return _claim("IMP beats random re-initialisation", _missing(evidence), evidence)
    verdict = "reproduced" if wins > 0.75 * total else "not reproduced"
    return _claim("IMP beats random re-initialisation", verdict, evidence)


def _claim_rewind(runs_dir: Path, claims: ClaimSettings, tasks: dict[str, TaskSummary]) -> dict:
    """θ_i vs θ0: the difference, against the spread of two θ0 runs (first part's IMP and ``imp_masks``)."""
    evidence = []
    helps = judged = 0
    for t in claims.claim_tasks:
        s = tasks[t]
        theta_i = claim_rows(runs_dir, t, "imp_rewind_step")
        vs_first = pruned_pairs(theta_i, s.rows["imp"], s.metric)
        vs_again = pruned_pairs(theta_i, claim_rows(runs_dir, t, "imp_masks"), s.metric)
        noise = pruned_pairs(s.rows["imp"], claim_rows(runs_dir, t, "imp_masks"), s.metric)
        if not vs_first or not testable(s):
            if vs_first:
                evidence.append(f"{_title(t)}: not testable (full model at chance)")
            continue
        diffs = [a - b for _, a, b in vs_first] + [a - b for _, a, b in vs_again]
        gain = statistics.fmean(diffs)
        spread = statistics.fmean(abs(a - b) for _, a, b in noise) if noise else None
        ti_match = matching(theta_i, s.metric, s.full_mean, s.full_std).get("sparsity")
        judged += 1
        better = gain > (spread if spread is not None else 0.0) and (ti_match or 0) > (
            s.imp_matching.get("sparsity") or 0
        )
        helps += better
        evidence.append(
            f"{_title(t)}: θ_i minus θ0 {gain:+.3f} on average over {len(vs_first)} sparsities"
            + (f" (two θ0 runs differ by {spread:.3f} on average)" if spread is not None else "")
            + f"; highest matching sparsity θ_i {pct(ti_match)}, θ0 {pct(s.imp_matching.get('sparsity'))}"
        )
    if not judged:
        return _claim("Rewinding to θ_i does not help (vs θ0)", _missing(evidence), evidence)
    verdict = "reproduced" if helps == 0 else "not reproduced"
    return _claim("Rewinding to θ_i does not help (vs θ0)", verdict, evidence)


def _claim_standard(ok: dict[str, TaskSummary], untestable: list[str]) -> dict:
    """Comparable = standard pruning's highest matching sparsity is IMP's, or at most one schedule step (10
    points) below it: the paper's Table 2 compares the two by that sparsity."""
    comparable = judged = 0
    evidence = []
    for t, s in ok.items():
        rows = s.rows.get("standard_pruning") or []
        if len(rows) < 2 or not s.rows["imp"]:
            continue
        imp_sp = s.imp_matching.get("sparsity") or 0.0
        std_sp = matching(rows, s.metric, s.full_mean, s.full_std).get("sparsity") or 0.0
        judged += 1
        comparable += std_sp >= imp_sp - 0.1 - 1e-9
        evidence.append(
            f"{_title(t)}: highest matching sparsity, standard pruning {pct(std_sp)} vs IMP {pct(imp_sp)} "
            f"(at IMP's: standard {fmt(s.score('standard_pruning', imp_sp))}, IMP {fmt(s.score('imp', imp_sp))})"
        )
    if not judged:
        return _claim("Standard pruning finds comparable subnetworks", "not testable here", evidence)
    verdict = "reproduced" if comparable == judged else "not reproduced"
    return _claim("Standard pruning finds comparable subnetworks", verdict, evidence)


def _claim_transfer(runs_dir, settings, claims, summaries, ok) -> dict:
    entries = table3(runs_dir, settings, claims, summaries)
    judged = [e for e in entries if e["testable"] and e["mlm_calibrated"] is not None]
    good = [e for e in judged if e["verdict"].startswith("transfers")]
    task_t = [
        t
        for t in read_transfers(runs_dir, summaries, settings)
        if t["source"] != MLM and t["target"] in ok and t["score"] is not None
    ]
    task_good = sum(bool(t["matching"]) for t in task_t)
    evidence = [
        f"MLM ticket (calibrated head) @ {pct(claims.table3_sparsity)} matching on {len(good)} of {len(judged)} "
        f"testable targets ({', '.join(e['title'] for e in good) or 'none'})",
        f"task tickets transferred to testable targets: {task_good} of {len(task_t)} matching (first part)",
    ]
    evidence += [
        f"{c['title']}: MLM ticket minus the task's own ticket, same fine-tune, "
        f"{len(c['sources']['mlm_calibrated']['scores'])} seeds: {gap_text(c['mlm_minus_own'])}"
        for c in control_table(runs_dir, settings, claims.table3_sparsity, claims.claim_tasks, summaries)
        if c["mlm_minus_own"] is not None
    ]
    if not judged:
        return _claim(
            "MLM tickets transfer; task tickets mostly do not", "not testable here (yet: runs pending)", evidence
        )
    mlm_universal = len(good) > len(judged) / 2
    task_mostly_not = task_good <= len(task_t) / 2
    verdict = "reproduced" if mlm_universal and task_mostly_not else "not reproduced"
    pending = [e["title"] for e in entries if e["verdict"] == "pending"]
    if pending:
        verdict += f" so far ({len(pending)} targets pending: {', '.join(pending)})"
    return _claim("MLM tickets transfer; task tickets mostly do not", verdict, evidence)


# ---------------------------------------------------------------------------------- writing
def head_calibration_text(runs_dir: Path) -> str:
    record = read_json(runs_dir / MLM / CALIBRATED / "head_calibration.json")
    if record is None:
        return "Head calibration: not run yet."
    curve = ", ".join(f"{p['step']}: {p['accuracy']:.3f}" for p in record["curve"])
    rows = search_rows(runs_dir / MLM / CALIBRATED)
    fresh = search_rows(runs_dir / MLM / "imp")
    text = (
        f"Head calibration (encoder frozen): {record['steps']} steps"
        f"{' (stopped at a plateau)' if record.get('plateaued') else ''}; masked-token accuracy by step: {curve}."
    )
    if rows and fresh:
        text += (
            f" θ0 of the MLM search: masked-token accuracy {rows[0].get('eval_accuracy', float('nan')):.3f} after "
            f"round 0 (fresh-head protocol, first part: {fresh[0].get('eval_accuracy', float('nan')):.3f})."
        )
    return text


def mlm_protocols_markdown(runs_dir: Path) -> str:
    """Masked-token accuracy of the MLM search per sparsity: fresh head (first part) vs calibrated head."""
    fresh, calibrated = search_rows(runs_dir / MLM / "imp"), search_rows(runs_dir / MLM / CALIBRATED)
    sparsities = sorted({round(r["sparsity"], 6) for r in fresh + calibrated})
    lines = ["| sparsity | fresh head (first part) | calibrated head |", "|---:|---:|---:|"]
    for sp in sparsities:
        cells = [fmt((row_at(rows, sp) or {}).get("eval_accuracy")) for rows in (fresh, calibrated)]
        lines.append(f"| {pct(sp)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def write_claims_report(results_dir: Path, settings, claims: ClaimSettings, resume_command: str = "") -> dict:
    runs_dir = results_dir / "runs"
    summaries = summarise(runs_dir, settings)
    entries = table3(runs_dir, settings, claims, summaries)
    controls = control_table(runs_dir, settings, claims.table3_sparsity, claims.claim_tasks, summaries)
    statements = claims_statements(runs_dir, settings, claims)
    (results_dir / "table3.md").write_text(
        f"# Table 3, scaled down: the MLM ticket transferred ({settings.name})\n\n"
        f"{table3_markdown(entries, claims)}\n\n"
        "Verdict: within one std of the target's full-model mean (the paper's band) = transfers; a target whose "
        "full model is within one std of chance or the majority label cannot support the claim.\n\n"
        f"{head_calibration_text(runs_dir)}\n\n"
        "## The MLM search: masked-token accuracy (WikiText-2), fresh head vs calibrated head\n\n"
        f"{mlm_protocols_markdown(runs_dir)}\n\n"
        f"## Controls: the same fine-tune under three tickets at {pct(claims.table3_sparsity)}, three seeds each\n\n"
        "The IMP tickets at this sparsity nearly coincide with one another and with θ0's one-shot magnitude "
        "ticket ([mask_overlap.md](mask_overlap.md)); these runs ask whether the MLM ticket's gap to the task's own "
        "ticket is the mask's or the run's (`table3_controls.py`).\n\n"
        f"{controls_markdown(controls, claims.table3_sparsity)}\n"
    )
    lines = [f"# The paper's claims ({settings.name})\n"]
    for c in statements:
        lines.append(f"- **{c['claim']}**: {c['verdict']}")
        lines += [f"  - {e}" for e in c["evidence"]]
    if resume_command:
        lines.append(f"\nRuns continue with: `{resume_command}`")
    (results_dir / "claims.md").write_text("\n".join(lines) + "\n")
    return {"table3": entries, "claims": statements}
