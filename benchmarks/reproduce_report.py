"""The report of ``benchmarks/reproduce.py``: tables, plots and findings rebuilt from the run folders.

Everything here reads files only, so a stopped run still gives a (partial) report, and the tests can
feed it synthetic results. Layout of ``<results>/runs/`` (one folder per fine-tuning run or search):

    <task>/dense_seed<S>/all_results.json     full model, seeds other than the IMP seed
    <task>/imp/results.json                   IMP, rewind to θ0 (its round 0 = full model, IMP seed)
    <task>/random_pruning/results.json        random masks, rewind to θ0
    <task>/standard_pruning/results.json      prune the trained weights and keep training (no rewind)
    <task>/early_bird/results.json            IMP that stops a round once its mask has settled
    <task>/early_bird_retrain/<pct>/transfer_results.json
                                              an early-bird ticket trained fully from θ0 (its score)
    mlm/imp/results.json                      IMP on masked language modelling (raw English text)
    transfer/<source>@<pct>__<target>/transfer_results.json
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hf_tickets.training.results import greater_is_better, matching_round, within_band

#: The paper's highest matching sparsity per task (Chen et al. 2020, Table 2), in percent.
PAPER_MATCHING_SPARSITY = {
    "mnli": 70,
    "qqp": 90,
    "stsb": 50,
    "wnli": 90,
    "qnli": 70,
    "mrpc": 50,
    "rte": 60,
    "sst2": 60,
    "cola": 50,
    "squad": 40,
    "mlm": 70,
}
TASK_TITLES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "mlm": "MLM"}
TIMINGS_FILE = "timings.json"
#: Per classification task: label counts of the evaluation subset, so a constant prediction's score is known.
LABELS_FILE = "eval_labels.json"
MAIN_METRICS = {
    "cola": "eval_matthews_correlation",
    "sst2": "eval_accuracy",
    "mrpc": "eval_accuracy",
    "stsb": "eval_pearson",
    "mlm": "eval_accuracy",
}
SEARCH_KINDS = ("imp", "random_pruning", "standard_pruning", "early_bird")
MLM = "mlm"
EARLY_BIRD_RETRAIN = "early_bird_retrain"


@dataclass
class Settings:
    """What a reproduction run does; ``full`` and ``smoke`` presets live in ``reproduce.py``."""

    name: str
    tasks: list[str]
    seeds: list[int]  # the first is the IMP seed: IMP's round 0 is the full model's run for that seed
    max_seq_length: int
    train_samples: dict[str, int]
    eval_samples: int
    epochs: float
    batch_size: int
    learning_rate: float
    sparsity_schedule: str
    early_bird_interval: int
    early_bird_patience: int
    early_bird_threshold: float
    mlm_train_blocks: int
    mlm_eval_blocks: int
    mlm_epochs: float
    mlm_train_file: str = "wikitext-2/wiki.test.raw"
    mlm_validation_file: str = "wikitext-2/wiki.valid.raw"
    data_shuffle_seed: int = 0
    #: Per task (or "mlm"): TrainingArguments that differ from the shared ones, e.g. more epochs.
    task_overrides: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def epochs_for(self, task: str) -> float:
        default = self.mlm_epochs if task == MLM else self.epochs
        return float(self.task_overrides.get(task, {}).get("num_train_epochs", default))

    @property
    def imp_seed(self) -> int:
        return self.seeds[0]

    @property
    def sparsities(self) -> list[float]:
        return [float(s) for s in self.sparsity_schedule.split(",")]

    def to_dict(self) -> dict:
        return asdict(self)


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def pct(sparsity: float | None) -> str:
    return "—" if sparsity is None else f"{100 * sparsity:.0f}%"


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------ reading
def search_rows(run_dir: Path) -> list[dict]:
    """The finished rounds of an IMP-style search (empty if it has not started)."""
    results = read_json(run_dir / "results.json")
    return list(results["rounds"]) if results else []


def restart_if_weights_lost(run_dir: Path) -> bool:
    """An unfinished IMP run whose θ0 is gone (not committed: a fresh clone) cannot resume: start it again.

    Its finished rounds are recomputed (same seed, same data). True if the folder was cleared."""
    if (run_dir / "imp_state.json").is_file() and not (run_dir / "theta0.safetensors").is_file():
        logging.getLogger("reproduce").warning(
            "%s: unfinished run without its θ0 (weights are not committed): starting it again", run_dir
        )
        shutil.rmtree(run_dir)
        return True
    return False


def search_complete(run_dir: Path, settings: Settings) -> bool:
    return len(search_rows(run_dir)) == len(settings.sparsities) + 1


def full_model_scores(task_dir: Path, metric: str, settings: Settings) -> dict[int, float]:
    """Seed -> the dense model's score: IMP's round 0 for the IMP seed, dense runs for the others."""
    scores: dict[int, float] = {}
    imp_rows = search_rows(task_dir / "imp")
    if imp_rows and imp_rows[0].get(metric) is not None:
        scores[settings.imp_seed] = float(imp_rows[0][metric])
    for seed in settings.seeds[1:]:
        record = read_json(task_dir / f"dense_seed{seed}" / "all_results.json")
        if record and record.get(metric) is not None:
            scores[seed] = float(record[metric])
    return scores


def mean_std(scores: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1), as over the paper's fine-tuning seeds."""
    if not scores:
        return None, None
    return statistics.fmean(scores), (statistics.stdev(scores) if len(scores) > 1 else None)


def matching(rows: list[dict], metric: str, full_mean: float | None, full_std: float | None) -> dict:
    """The paper's criterion: the sparsest round within one std (over seeds) of the full model's mean.

    Without a std (one seed, e.g. MLM) the library's default band applies: 1% of the full score.
    """
    entry = matching_round(rows, metric, full_mean, full_model_std=full_std)
    if entry.get("sparsity") == 0.0:  # round 0 is the dense model, never a ticket
        entry.update(round=None, sparsity=None, reason="no pruned round is within the band")
    return entry


def pruned_rows(rows: list[dict]) -> list[dict]:
    """Rounds with sparsity > 0: a baseline's round 0 is the full model again (or a 1-step stand-in)."""
    return [r for r in rows if r.get("sparsity", 0) > 0]


def row_at(rows: list[dict], sparsity: float | None) -> dict | None:
    if sparsity is None:
        return None
    return next((r for r in rows if abs(r["sparsity"] - sparsity) < 1e-6), None)


def saved_ticket_dir(run_dir: Path, sparsity: float) -> Path | None:
    """The ticket folder a search saved at ``sparsity``; None when the round or its masks (never committed) are
    not here."""
    from hf_tickets.core.ticket import MASKS_FILE

    row = row_at(search_rows(run_dir), sparsity)
    if row is None or not (run_dir / row["ticket"] / MASKS_FILE).is_file():
        return None
    return run_dir / row["ticket"]


@dataclass
class TaskSummary:
    task: str
    metric: str
    full_scores: dict[int, float]
    full_mean: float | None
    full_std: float | None
    rows: dict[str, list[dict]]  # search kind -> finished rounds
    imp_matching: dict
    early_bird_matching: dict
    majority: float | None = None  # accuracy of always predicting the eval subset's most frequent label
    #: Early-bird tickets trained fully (sparsity -> score): the retrained ones, and the last round, which
    #: early bird never stops. The other early-bird rounds stop early, so their scores are not the ticket's.
    early_bird_full: dict[float, float] = field(default_factory=dict)

    def score(self, kind: str, sparsity: float | None) -> float | None:
        row = row_at(self.rows.get(kind, []), sparsity)
        return None if row is None else row.get(self.metric)


def chance_level(s: TaskSummary) -> float:
    """What a model that learned nothing scores: the majority label's share, else 0 (MCC, Pearson, F1)."""
    return s.majority if s.majority is not None and s.metric.endswith("accuracy") else 0.0


def testable(s: TaskSummary) -> bool:
    """The full model is more than one std above chance / the majority label (one seed: any margin)."""
    if s.full_mean is None:
        return False
    return s.full_mean - (s.full_std or 0.0) > chance_level(s)


def summarise_task(runs_dir: Path, task: str, settings: Settings) -> TaskSummary:
    task_dir, metric = runs_dir / task, MAIN_METRICS[task]
    rows = {kind: search_rows(task_dir / kind) for kind in SEARCH_KINDS}
    if task == MLM:  # one seed: the full model is IMP's round 0
        scores = {settings.imp_seed: rows["imp"][0][metric]} if rows["imp"] else {}
    else:
        scores = full_model_scores(task_dir, metric, settings)
    mean, std = mean_std(list(scores.values()))
    labels = read_json(task_dir / LABELS_FILE) or {}
    full_eb = early_bird_full_scores(task_dir, rows["early_bird"], metric, settings)
    eb_rows = [{"round": i + 1, "sparsity": sp, metric: v} for i, (sp, v) in enumerate(sorted(full_eb.items()))]
    return TaskSummary(
        task,
        metric,
        scores,
        mean,
        std,
        rows,
        matching(rows["imp"], metric, mean, std),
        matching(eb_rows, metric, mean, std),
        labels.get("majority_share"),
        full_eb,
    )


def scheduled(sparsity: float, settings: Settings) -> float:
    """The scheduled sparsity nearest ``sparsity`` (the lower one on a tie), e.g. a round's measured
    0.9000000188 or the paper's matching sparsity."""
    return min(settings.sparsities, key=lambda s: (abs(s - sparsity), s))


def early_bird_retrain_sparsities(imp_matching: dict, task: str, settings: Settings) -> list[float]:
    """Where early-bird tickets are trained fully: IMP's matching sparsity and the one nearest the paper's.

    Not the last scheduled sparsity: early bird never stops the last round, so that score is already full.
    """
    paper = PAPER_MATCHING_SPARSITY[task] / 100
    wanted = {scheduled(paper, settings)}
    if imp_matching.get("sparsity") is not None:
        wanted.add(scheduled(imp_matching["sparsity"], settings))
    return sorted(wanted - {settings.sparsities[-1]})


def retrain_dir(task_dir: Path, sparsity: float) -> Path:
    return task_dir / EARLY_BIRD_RETRAIN / f"{100 * sparsity:.0f}"


def early_bird_full_scores(task_dir: Path, eb_rows: list[dict], metric: str, settings: Settings) -> dict[float, float]:
    scores = {}
    for sparsity in settings.sparsities[:-1]:
        record = read_json(retrain_dir(task_dir, sparsity) / "transfer_results.json")
        if record and record["metrics"].get(metric) is not None:
            scores[sparsity] = float(record["metrics"][metric])
    last = row_at(eb_rows, settings.sparsities[-1]) if len(eb_rows) == len(settings.sparsities) + 1 else None
    if last is not None and last.get(metric) is not None:
        scores[settings.sparsities[-1]] = float(last[metric])
    return scores


def summarise(runs_dir: Path, settings: Settings) -> dict[str, TaskSummary]:
    return {task: summarise_task(runs_dir, task, settings) for task in [*settings.tasks, MLM]}


# ------------------------------------------------------------------------------ transfer runs
def transfer_source_sparsity(summary: TaskSummary, settings: Settings) -> tuple[float | None, bool]:
    """Which IMP round of a source is transferred: its matching ticket, else the scheduled sparsity
    nearest the paper's matching sparsity for that task.

    Returns ``(sparsity, is_matching)``; ``None`` while the source's IMP run has not got that far.
    """
    if summary.imp_matching.get("sparsity") is not None:
        return summary.imp_matching["sparsity"], True
    if not summary.full_scores:
        return None, False
    paper = PAPER_MATCHING_SPARSITY[summary.task] / 100
    fallback = scheduled(paper, settings)
    return (fallback, False) if row_at(summary.rows["imp"], fallback) else (None, False)


def transfer_pairs(settings: Settings) -> list[tuple[str, str]]:
    """(source, target): the MLM ticket to every task (universality), every task ticket to the others."""
    pairs = [(MLM, target) for target in settings.tasks]
    pairs += [(source, target) for source in settings.tasks for target in settings.tasks if source != target]
    return pairs


def transfer_dir_name(source: str, sparsity: float, target: str) -> str:
    return f"{source}@{100 * sparsity:.0f}__{target}"


def read_transfers(runs_dir: Path, summaries: dict[str, TaskSummary], settings: Settings) -> list[dict]:
    rows = []
    for source, target in transfer_pairs(settings):
        sparsity, source_matching = transfer_source_sparsity(summaries[source], settings)
        record = None
        if sparsity is not None:
            record = read_json(
                runs_dir / "transfer" / transfer_dir_name(source, sparsity, target) / "transfer_results.json"
            )
        goal = summaries[target]
        score = None if record is None else record["metrics"].get(goal.metric)
        is_matching = None if score is None or goal.full_mean is None else score_matches(goal, score)
        rows.append(
            {
                "source": source,
                "target": target,
                "sparsity": sparsity,
                "source_matching": source_matching,
                "score": score,
                "matching": is_matching,
                "target_imp_same_sparsity": goal.score("imp", sparsity),
                "target_random_same_sparsity": goal.score("random_pruning", sparsity),
            }
        )
    return rows


# ----------------------------------------------------------------------------------- tables
def _full_cell(s: TaskSummary) -> str:
    if s.full_mean is None:
        return "missing"
    std = f" ± {s.full_std:.3f}" if s.full_std is not None else " (1 seed)"
    return f"{s.full_mean:.3f}{std}"


def _constant_cell(s: TaskSummary) -> str:
    if s.metric.removeprefix("eval_") in ZERO_AT_CHANCE:
        return "0"
    return fmt(s.majority) if s.majority is not None else "—"


def table2_markdown(summaries: dict[str, TaskSummary]) -> str:
    """The paper's Table 2 layout: one column per task, rows = full model, IMP, random pruning, ..."""
    tasks = list(summaries)
    header = "| | " + " | ".join(TASK_TITLES.get(t, t) for t in tasks) + " |"
    lines = [header, "|---|" + "---:|" * len(tasks)]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(summaries[t]) for t in tasks) + " |")

    def at_matching(kind: str):
        return lambda s: fmt(s.score(kind, s.imp_matching.get("sparsity")))

    row("metric", lambda s: s.metric.removeprefix("eval_"))
    row("full model (mean ± std over seeds)", _full_cell)
    row("constant prediction (majority label; chance)", _constant_cell)
    row(
        "**matching sparsity, IMP (ours)**",
        lambda s: pct(s.imp_matching.get("sparsity")) if s.full_mean is not None else "missing",
    )
    row("matching sparsity, paper (BERT-base)", lambda s: f"{PAPER_MATCHING_SPARSITY[s.task]}%")
    row("IMP ticket, rewind to θ0, at that sparsity", at_matching("imp"))
    row("random pruning at that sparsity", at_matching("random_pruning"))
    row("standard pruning at that sparsity", at_matching("standard_pruning"))
    row("IMP beats random pruning (sparsities)", lambda s: beats_text(s))
    return "\n".join(lines)


def imp_vs_random(summary: TaskSummary) -> tuple[int, int]:
    """At how many pruned sparsities (of those both ran) IMP scored higher than random pruning."""
    higher = greater_is_better(summary.metric)
    wins = total = 0
    for row in pruned_rows(summary.rows["imp"]):
        other = summary.score("random_pruning", row["sparsity"])
        if other is not None and row.get(summary.metric) is not None:
            total += 1
            wins += (row[summary.metric] > other) if higher else (row[summary.metric] < other)
    return wins, total


def beats_text(summary: TaskSummary) -> str:
    if summary.task == MLM:
        return "not run"
    wins, total = imp_vs_random(summary)
    return f"{wins}/{total}" if total else "—"


def per_sparsity_markdown(summaries: dict[str, TaskSummary], settings: Settings) -> str:
    """Every sparsity of every task: IMP, random pruning, standard pruning, early-bird, matching mark."""
    parts = []
    for s in summaries.values():
        band = (
            "—"
            if s.full_mean is None
            else f"{s.full_mean:.3f} ± {s.full_std:.3f}"
            if s.full_std is not None
            else f"{s.full_mean:.3f}"
        )
        parts += [
            f"### {TASK_TITLES.get(s.task, s.task)} ({s.metric.removeprefix('eval_')}; full model {band})",
            "",
            "| sparsity | IMP | matching | random pruning | standard pruning | early-bird ticket, trained fully |",
            "|---:|---:|:---:|---:|---:|---:|",
        ]
        matched = set(s.imp_matching.get("matching_rounds") or [])
        for sparsity in [0.0, *settings.sparsities]:
            imp_row = row_at(s.rows["imp"], sparsity)
            mark = "—" if imp_row is None or sparsity == 0 else ("yes" if imp_row["round"] in matched else "no")
            cells = [fmt(s.score("imp", sparsity)), mark]
            cells += [
                fmt(s.score(k, sparsity)) if sparsity > 0 else "(full)" for k in ("random_pruning", "standard_pruning")
            ]
            cells.append(fmt(s.early_bird_full.get(scheduled(sparsity, settings))) if sparsity > 0 else "—")
            parts.append(f"| {pct(sparsity)} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def transfer_matrix_markdown(rows: list[dict], summaries: dict[str, TaskSummary], settings: Settings) -> str:
    """Source ticket (rows) x target task (columns): score, ✓ when within the target's matching band."""
    targets = settings.tasks
    lines = [
        "| source ticket ↓ / target task → | " + " | ".join(TASK_TITLES[t] for t in targets) + " |",
        "|---|" + "---:|" * len(targets),
    ]
    lines.append("| full model (mean ± std) | " + " | ".join(_full_cell(summaries[t]) for t in targets) + " |")
    by_pair = {(r["source"], r["target"]): r for r in rows}
    for source in [MLM, *settings.tasks]:
        sparsity, source_matching = transfer_source_sparsity(summaries[source], settings)
        label = f"{TASK_TITLES[source]} ticket @ {pct(sparsity)}" + (
            "" if source_matching or sparsity is None else " (not matching on its own task)"
        )
        cells = []
        for target in targets:
            if target == source:
                own = summaries[source].score("imp", sparsity)
                cells.append(f"({fmt(own)} own)")
                continue
            r = by_pair[(source, target)]
            mark = {True: " ✓", False: " ✗", None: ""}[r["matching"]]
            cells.append("missing" if r["score"] is None else f"{fmt(r['score'])}{mark}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_steps(rows: list[dict]) -> int:
    return sum(r.get("train_steps") or 0 for r in rows)


def early_bird_markdown(summaries: dict[str, TaskSummary], settings: Settings) -> str:
    lines = [
        "| task | IMP train steps | early-bird train steps | steps saved | IMP train time (s) | early-bird "
        "train time (s) "
        "| IMP matching sparsity | early-bird ticket trained fully (sparsity: score) | early-bird matching sparsity "
        "| rounds done (IMP / early-bird) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for s in summaries.values():
        if s.task == MLM:
            continue
        imp, eb = s.rows["imp"], s.rows["early_bird"]
        # Compare only the rounds both have finished, so a partial run does not look like a saving.
        n = min(len(imp), len(eb))
        imp_steps, eb_steps = train_steps(imp[:n]), train_steps(eb[:n])
        saved = f"{imp_steps - eb_steps} ({100 * (imp_steps - eb_steps) / imp_steps:.0f}%)" if imp_steps else "—"
        imp_time = sum(r.get("train_time_s") or 0 for r in imp[:n])
        eb_time = sum(r.get("train_time_s") or 0 for r in eb[:n])
        scored = [
            f"{pct(sp)}: {score:.3f} {'✓' if score_matches(s, score) else '✗'}"
            for sp, score in sorted(s.early_bird_full.items())
        ]
        lines.append(
            f"| {TASK_TITLES[s.task]} | {imp_steps} | {eb_steps} | {saved} | {imp_time:.0f} | {eb_time:.0f} | "
            f"{pct(s.imp_matching.get('sparsity'))} | {', '.join(scored) or '—'} | "
            f"{pct(s.early_bird_matching.get('sparsity'))} | {len(imp)} / {len(eb)} |"
        )
    return "\n".join(lines) + (
        "\n\nEarly bird stops a round once the mask it would prune has settled (checked every "
        f"{settings.early_bird_interval} steps; settled = under {settings.early_bird_threshold:.0%} of the weights "
        f"that round prunes changed, {settings.early_bird_patience} checks in a row), so those rounds' own scores "
        "are of under-trained models. A ticket's "
        "score is measured by training it fully from θ0: early-bird tickets at IMP's matching sparsity and at the "
        "paper's, plus the last round (never stopped). ✓ = within one std of the full model's mean. The steps saved "
        "are the search's; the full trainings are the measurement, as for any ticket.\n"
    )


# --------------------------------------------------------------------------------- progress
def progress(
    runs_dir: Path, summaries: dict[str, TaskSummary], transfers: list[dict], settings: Settings
) -> list[dict]:
    """Every planned run and whether it is done, partial (rounds done / total) or missing."""
    total_rounds = len(settings.sparsities) + 1
    items = []
    for task in settings.tasks:
        for seed in settings.seeds[1:]:
            done = (runs_dir / task / f"dense_seed{seed}" / "all_results.json").is_file()
            items.append({"run": f"{task}/dense_seed{seed}", "status": "done" if done else "missing"})
        for kind in SEARCH_KINDS:
            n = len(summaries[task].rows[kind])
            status = "done" if n == total_rounds else "missing" if n == 0 else f"partial ({n}/{total_rounds} rounds)"
            items.append({"run": f"{task}/{kind}", "status": status})
        for sparsity in early_bird_retrain_sparsities(summaries[task].imp_matching, task, settings):
            done = sparsity in summaries[task].early_bird_full
            items.append(
                {"run": f"{task}/{EARLY_BIRD_RETRAIN}@{pct(sparsity)}", "status": "done" if done else "missing"}
            )
    n = len(summaries[MLM].rows["imp"])
    items.append(
        {
            "run": "mlm/imp",
            "status": "done" if n == total_rounds else "missing" if n == 0 else f"partial ({n}/{total_rounds} rounds)",
        }
    )
    for r in transfers:
        status = (
            "done"
            if r["score"] is not None
            else "missing"
            if r["sparsity"] is not None
            else "missing (source ticket not found yet)"
        )
        items.append({"run": f"transfer/{r['source']}->{r['target']}", "status": status})
    return items


def timing_text(timings: dict) -> str:
    """What the timed runs cost: wall time (pauses and other work on the machine included) and CPU time."""
    if not timings:
        return "No run timed yet (timings.json)."
    wall = sum(t["wall_s"] for t in timings.values())
    cpu = sum(t["cpu_s"] for t in timings.values())
    return (
        f"Timed runs ({len(timings)}, timings.json): {wall / 3600:.2f} h wall, {cpu / 3600:.2f} h CPU "
        f"(over both cores; the wall time includes pauses and other work on the machine)."
    )


def progress_markdown(items: list[dict], timings: dict | None = None) -> str:
    done = sum(i["status"] == "done" for i in items)
    lines = [
        f"{done} of {len(items)} planned runs done.",
        "",
        timing_text(timings or {}),
        "",
        "| run | status |",
        "|---|---|",
    ]
    lines += [f"| {i['run']} | {i['status']} |" for i in items]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- findings
#: A full model whose seeds disagree by more than this fraction of its mean score has not learned the task reliably.
WEAK_FULL_MODEL = 0.25
#: Metrics whose chance level is 0 (a constant prediction scores 0).
ZERO_AT_CHANCE = ("matthews_correlation", "pearson", "spearmanr")


def findings(summaries: dict[str, TaskSummary], transfers: list[dict], settings: Settings) -> list[str]:
    """Plain statements of what held and what did not, next to the paper's claims."""
    out = []
    for task in settings.tasks:
        s = summaries[task]
        name = TASK_TITLES[task]
        if s.full_mean is None or not pruned_rows(s.rows["imp"]):
            out.append(f"{name}: not enough runs yet.")
            continue
        wins, total = imp_vs_random(s)
        ours = s.imp_matching.get("sparsity")
        paper = PAPER_MATCHING_SPARSITY[task]
        imp_done = len(pruned_rows(s.rows["imp"]))
        where = f"(IMP ran {imp_done}/{len(settings.sparsities)} pruned rounds)"
        matching_text = (
            f"highest matching sparsity {pct(ours)} vs the paper's {paper}%"
            if ours is not None
            else f"no matching IMP ticket at any sparsity reached (paper: {paper}%)"
        )
        beat = f"IMP beat random pruning at {wins} of {total} sparsities" if total else "random pruning not run yet"
        out.append(f"{name}: {matching_text}; {beat} {where}.")
        if s.metric.removeprefix("eval_") in ZERO_AT_CHANCE and abs(s.full_mean) <= (s.full_std or 0.0) + 0.01:
            out.append(
                f"{name}: caution, the full model is at chance level ({s.metric.removeprefix('eval_')} "
                f"{s.full_mean:.3f} ± {s.full_std or 0.0:.3f}, within one std of 0): there is nothing for a "
                "ticket to match."
            )
        elif s.majority is not None and s.full_mean <= s.majority + max(2 * (s.full_std or 0.0), 0.02):
            where = "below" if s.full_mean < s.majority else "barely above"
            out.append(
                f"{name}: caution, the full model ({s.full_mean:.3f}) is {where} always predicting the "
                f"majority label ({s.majority:.3f}): matching it says little."
            )
        elif s.full_std is not None and s.full_std > WEAK_FULL_MODEL * abs(s.full_mean):
            out.append(
                f"{name}: caution, the full model barely learned the task at this scale ({s.full_mean:.3f} ± "
                f'{s.full_std:.3f} over seeds): a one-std band this wide makes "matching" weak evidence.'
            )
    out += [line for task in settings.tasks if (line := early_bird_finding(summaries[task], settings))]
    mlm = summaries[MLM]
    if mlm.full_mean is not None:
        out.append(
            f"MLM: highest matching sparsity {pct(mlm.imp_matching.get('sparsity'))} vs the paper's 70% "
            f"(one seed, so the band is 1% of the full model's masked-token accuracy)."
        )
    # A target whose full model is at chance has a band that any ticket lands in: such transfers are not counted.
    done = [t for t in transfers if t["score"] is not None]
    judged = [t for t in done if testable(summaries[t["target"]])]
    untestable = sorted({TASK_TITLES[t["target"]] for t in done if t not in judged})
    not_counted = f"; not testable (full model within one std of chance): {', '.join(untestable)}" if untestable else ""
    mlm_transfers = [t for t in judged if t["source"] == MLM]
    if any(t["source"] == MLM for t in done):
        good = [TASK_TITLES[t["target"]] for t in mlm_transfers if t["matching"]]
        out.append(
            f"MLM ticket transfer (universality): matching on {len(good)} of {len(mlm_transfers)} testable tasks"
            + (f" ({', '.join(good)})" if good else "")
            + f"{not_counted}."
        )
    task_transfers = [t for t in judged if t["source"] != MLM]
    if any(t["source"] != MLM for t in done):
        good = sum(bool(t["matching"]) for t in task_transfers)
        out.append(
            f"Task-to-task transfer: {good} of {len(task_transfers)} transferred tickets were matching on a "
            f"testable target{not_counted}."
        )
    return out


def early_bird_finding(s: TaskSummary, settings: Settings) -> str | None:
    rounds = len(settings.sparsities) + 1
    imp, eb = s.rows["imp"], s.rows["early_bird"]
    if len(imp) < rounds or len(eb) < rounds:
        return None
    imp_steps, eb_steps = train_steps(imp), train_steps(eb)
    saved = 100 * (imp_steps - eb_steps) / imp_steps
    text = f"{TASK_TITLES[s.task]} early bird: {saved:.0f}% fewer training steps than IMP"
    ours = s.imp_matching.get("sparsity")
    score = None if ours is None else s.early_bird_full.get(scheduled(ours, settings))
    if score is not None:
        imp_score = s.score("imp", ours)
        verdict = "matching too" if score_matches(s, score) else "not matching"
        text += (
            f"; its ticket at IMP's matching sparsity ({pct(ours)}), trained fully, scores {score:.3f} "
            f"(IMP's {fmt(imp_score)}): {verdict}"
        )
    tried = ", ".join(pct(x) for x in sorted(s.early_bird_full))
    return (
        text + f"; highest matching early-bird sparsity of those trained fully ({tried}): "
        f"{pct(s.early_bird_matching.get('sparsity'))}."
    )


def score_matches(s: TaskSummary, score: float) -> bool:
    if s.full_mean is None:
        return False
    band = s.full_std if s.full_std is not None else 0.01 * abs(s.full_mean)
    return within_band(score, s.full_mean, band, greater_is_better(s.metric))


# ------------------------------------------------------------------------------------ plots
def write_plots(summaries: dict[str, TaskSummary], plots_dir: Path) -> list[Path]:
    from hf_tickets.hub.plots import plot_sparsity_vs_score

    written = []
    for s in summaries.values():
        if not s.rows["imp"]:
            continue
        baselines = {
            kind.replace("_", " "): pruned_rows(s.rows[kind])
            for kind in ("random_pruning", "standard_pruning")
            if pruned_rows(s.rows[kind])
        }
        written.append(
            plot_sparsity_vs_score(
                s.rows["imp"],
                s.metric,
                plots_dir / f"{s.task}.png",
                full_score=s.full_mean,
                full_std=s.full_std,
                baselines=baselines,
            )
        )
    return written


# ------------------------------------------------------------------------------------ report
def write_report(results_dir: Path, settings: Settings, plots: bool = True) -> dict:
    """Rebuild every table, plot and summary under ``results_dir`` from the run folders."""
    runs_dir = results_dir / "runs"
    summaries = summarise(runs_dir, settings)
    transfers = read_transfers(runs_dir, summaries, settings)
    items = progress(runs_dir, summaries, transfers, settings)
    complete = all(i["status"] == "done" for i in items)
    banner = (
        ""
        if complete
        else (
            "> **Partial results**: some planned runs are missing or unfinished (see `progress.md`); "
            "rerun the same command to continue.\n\n"
        )
    )
    (results_dir / "table2.md").write_text(
        f"# Table 2, scaled down ({settings.name})\n\n{banner}{table2_markdown(summaries)}\n\n"
        f"## Every sparsity\n\n{per_sparsity_markdown(summaries, settings)}"
    )
    (results_dir / "transfer.md").write_text(
        f"# Transfer matrix ({settings.name})\n\n{banner}"
        f"{transfer_matrix_markdown(transfers, summaries, settings)}\n\n"
        "✓ = within one std of the target's full-model mean (the paper's matching band); "
        "the diagonal is the source ticket's own IMP score.\n"
    )
    (results_dir / "early_bird.md").write_text(
        f"# Early-bird IMP beside plain IMP ({settings.name})\n\n{banner}{early_bird_markdown(summaries, settings)}"
    )
    (results_dir / "progress.md").write_text(
        f"# Progress ({settings.name})\n\n{progress_markdown(items, read_json(results_dir / TIMINGS_FILE))}\n"
    )
    statements = findings(summaries, transfers, settings)
    (results_dir / "findings.md").write_text(
        f"# Findings ({settings.name})\n\n{banner}" + "\n".join(f"- {s}" for s in statements) + "\n"
    )
    if plots:
        write_plots(summaries, results_dir / "plots")
    summary = {
        "complete": complete,
        "findings": statements,
        "progress": items,
        "transfers": transfers,
        "tasks": {
            t: {
                "metric": s.metric,
                "full_scores": s.full_scores,
                "full_mean": s.full_mean,
                "full_std": s.full_std,
                "imp_matching": s.imp_matching,
                "early_bird_matching": s.early_bird_matching,
                "imp_vs_random_wins": imp_vs_random(s),
            }
            for t, s in summaries.items()
        },
    }
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
