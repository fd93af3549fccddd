"""IMPManager: iterative magnitude pruning on a tiny BERT, its baselines, resume and the paper code's pitfalls."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from imp_kill_script import token_five_data
from safetensors.torch import load_file
from tiny import tiny_model
from torch.utils.data import DataLoader
from transformers import BertForSequenceClassification, HfArgumentParser, Trainer, TrainerCallback, TrainingArguments

import hf_tickets
from hf_tickets import IMPConfig, IMPManager, Ticket, TicketError
from hf_tickets.core.schedules import imp_schedule, parse_sparsities
from hf_tickets.training.callback import TicketCallback
from hf_tickets.training.results import matching_round, to_csv

TESTS = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent
STEPS = 20
TRAIN, EVAL = token_five_data(96, seed=0), token_five_data(64, seed=1)


# ----------------------------------------------------------------- helpers
def fresh_model(seed: int = 0):
    return tiny_model(BertForSequenceClassification, seed=seed).train()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def accuracy(model) -> float:
    model.eval()
    with torch.no_grad():
        ids, labels = EVAL.tensors
        value = (model(input_ids=ids).logits.argmax(-1) == labels).float().mean().item()
    model.train()
    return value


def run_plain(manager, model, steps=STEPS, lr=3e-3, apply_masks=True, probe=None, at_steps=()):
    """The plain loop: a fresh AdamW (with weight decay) every round, ``manager.apply_masks()`` after each step.

    ``probe[r]`` gets the round's ticket and the weights at its start and end, ``probe[(r, step)]`` the
    weights after the given optimizer steps.
    """
    for rnd in manager.rounds(total_steps=steps):
        if probe is not None:
            probe[rnd.index] = {"start": snapshot(model), "ticket": rnd.ticket}
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
        step = 0
        while step < steps and not rnd.should_stop:
            for ids, labels in DataLoader(TRAIN, batch_size=8, shuffle=True):
                model(input_ids=ids, labels=labels).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if apply_masks:
                    manager.apply_masks()
                step += 1
                if probe is not None and step in at_steps:
                    probe[(rnd.index, step)] = snapshot(model)
                if step == steps or rnd.should_stop:
                    break
        if probe is not None:
            probe[rnd.index]["end"] = snapshot(model)
        rnd.finish({"eval_accuracy": accuracy(model)})
    return manager


def key(name: str) -> str:
    """State-dict key of a ticket tensor name (ticket names are relative to model.bert)."""
    return f"bert.{name}"


def masked(state: dict, ticket: Ticket) -> dict:
    out = dict(state)
    for name, mask in ticket.masks.items():
        out[key(name)] = state[key(name)] * mask
    return out


def assert_state_equal(actual: dict, expected: dict) -> None:
    differing = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not differing, f"differ: {differing[:5]}"


def pruned_sets_overlap(a: Ticket, b: Ticket) -> float:
    inter = sum(int((~a.masks[n] & ~b.masks[n]).sum()) for n in a.masks)
    union = sum(int((~a.masks[n] | ~b.masks[n]).sum()) for n in a.masks)
    return inter / union


def all_masks(out: Path) -> dict[str, torch.Tensor]:
    masks = {}
    for ticket_dir in sorted(out.glob("round_*/ticket")):
        masks.update({f"{ticket_dir.parent.name}/{n}": m for n, m in Ticket.from_pretrained(ticket_dir).masks.items()})
    return masks


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and runs compared bit for bit use the same arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def imp_run(one_thread, tmp_path_factory):
    """Three IMP rounds at the paper's rate after the full model, with the weights at every round start/end."""
    out = tmp_path_factory.mktemp("imp")
    model = fresh_model()
    theta0 = snapshot(model)
    aliased = model.state_dict()  # the paper code's "θ0": tensors that share storage with the model
    probe = {}
    start = time.perf_counter()
    manager = run_plain(IMPManager(model, IMPConfig(imp_rounds=3, imp_seed=0), out), model, probe=probe)
    return SimpleNamespace(
        out=out,
        model=model,
        theta0=theta0,
        aliased=aliased,
        probe=probe,
        manager=manager,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------- schedules
def test_schedules():
    assert imp_schedule(0.1, 0.9, imp_rounds=3) == pytest.approx([0.0, 0.1, 0.19, 0.271])
    paper = imp_schedule(0.1, 0.9)
    assert len(paper) == 23 and paper[-1] == 0.9 and paper[-2] == pytest.approx(1 - 0.9**21)  # clipped at the target
    assert imp_schedule(sparsity_schedule="0.1,0.2,0.3") == [0.0, 0.1, 0.2, 0.3]
    assert imp_schedule(sparsity_schedule=[0.1, 0.2, 0.3], imp_rounds=2) == [0.0, 0.1, 0.2]
    assert imp_schedule(0.1, 0.9, imp_rounds=0) == [0.0]
    assert parse_sparsities("0.5 0.7") == [0.5, 0.7]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target_sparsity=1.0), "target_sparsity"),
        (dict(prune_fraction=0.0), "prune_fraction"),
        (dict(sparsity_schedule="0.2,0.1"), "increase"),
        (dict(sparsity_schedule="0.1,1.0"), r"\(0, 1\)"),
        (dict(sparsity_schedule="0.1,abc"), "not a number"),
        (dict(sparsity_schedule="0.1", imp_rounds=2), "only 1"),
        (dict(imp_rounds=-1), "imp_rounds"),
        (dict(baseline="lottery"), "unknown baseline"),
        (dict(baseline="random_reinit"), "reference_dir"),
        (dict(reference_dir="x"), "reference_dir"),
        (dict(rewind="step"), "rewind_steps > 0"),
        (dict(rewind_steps=5), "rewind='step'"),
        (dict(rewind="latest"), "rewind must be"),
        (dict(baseline="standard_pruning", rewind="step", rewind_steps=2), "never rewinds"),
        (dict(baseline="random_pruning", early_bird=True), "early_bird"),
        (dict(early_bird_threshold=0.0), "early_bird_threshold"),
        (dict(strategy="biggest"), "unknown pruning strategy"),
        (dict(matching_tolerance=-0.1), "matching_tolerance"),
    ],
)
def test_config_errors_are_clear(kwargs, message):
    with pytest.raises(TicketError, match=message):
        IMPConfig(**kwargs)


def test_config_parses_from_the_command_line_beside_training_arguments(tmp_path):
    parser = HfArgumentParser((TrainingArguments, IMPConfig))  # no flag clashes with the stock arguments
    training, config = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--imp_rounds",
            "3",
            "--sparsity_schedule",
            "0.1,0.2,0.3",
            "--baseline",
            "random_pruning",
            "--matching_tolerance",
            "0.02",
            "--early_bird",
            "false",
            "--imp_seed",
            "7",
        ]
    )
    assert config.schedule() == [0.0, 0.1, 0.2, 0.3]
    assert (config.baseline, config.matching_tolerance, config.imp_seed, config.early_bird) == (
        "random_pruning",
        0.02,
        7,
        False,
    )
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--baseline", "other"])  # choices


def test_matching_round_rule():
    rows = [
        {"round": r, "sparsity": s, "acc": a}
        for r, s, a in [(0, 0.0, 0.90), (1, 0.1, 0.85), (2, 0.19, 0.895), (3, 0.271, 0.70)]
    ]
    default = matching_round(rows, "acc", 0.90)  # 1% of the full score
    assert (default["round"], default["matching_rounds"], default["tolerance"]) == (2, [0, 2], pytest.approx(0.009))
    std = matching_round(rows, "acc", 0.90, full_model_std=0.06)
    assert std["matching_rounds"] == [0, 1, 2] and "standard deviation" in std["tolerance_source"]
    assert matching_round(rows, "acc", 0.90, matching_tolerance=0.3)["round"] == 3
    losses = [{"round": 0, "sparsity": 0.0, "eval_loss": 0.3}, {"round": 1, "sparsity": 0.1, "eval_loss": 0.5}]
    assert matching_round(losses, "eval_loss", 0.3)["round"] == 0  # lower is better for losses
    assert matching_round(rows, "f1", None)["round"] is None
    assert (
        to_csv(rows).splitlines()[0] == "round,sparsity,baseline,acc,train_time_s,train_steps,planned_steps,"
        "early_bird_stopped,early_bird_steps_saved,ticket"
    )


# ---------------------------------------------------------- the IMP loop
def test_three_rounds_at_the_papers_rate(imp_run):
    rows = imp_run.manager.results["rounds"]
    n = imp_run.probe[1]["ticket"].num_weights
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    for row, expected in zip(rows, [0.0, 0.1, 0.19, 0.271]):
        assert row["sparsity"] * n == round(expected * n)  # exactly round(s * n) pruned
    assert [r["sparsity"] for r in rows] == pytest.approx([0.0, 0.1, 0.19, 0.271], abs=1 / n)
    for r in (1, 2):  # cumulative: what was pruned stays pruned
        before, after = imp_run.probe[r]["ticket"], imp_run.probe[r + 1]["ticket"]
        assert all(not (~before.masks[k] & after.masks[k]).any() for k in before.masks)
    for r in range(4):
        saved = Ticket.from_pretrained(imp_run.out / f"round_{r:02d}" / "ticket")
        assert saved.equals(imp_run.probe[r]["ticket"])
        assert json.loads((imp_run.out / f"round_{r:02d}" / "metrics.json").read_text())["train_steps"] == STEPS
        assert saved.config.provenance["imp_round"] == r and "eval_accuracy" in saved.config.provenance["metrics"]
    results = json.loads((imp_run.out / "results.json").read_text())
    assert results["world_size"] == 1 and results["complete"] and len(results["rounds"]) == 4
    assert (
        results["matching"]["metric"] == "eval_accuracy"
        and results["matching"]["full_score"] == rows[0]["eval_accuracy"]
    )
    csv_lines = (imp_run.out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("round,sparsity,baseline,eval_accuracy,train_time_s")


def test_pruned_weights_exactly_zero_after_adamw_with_weight_decay(imp_run):
    for r in (1, 2, 3):
        ticket, start, end = imp_run.probe[r]["ticket"], imp_run.probe[r]["start"], imp_run.probe[r]["end"]
        for name, mask in ticket.masks.items():
            assert torch.count_nonzero(end[key(name)][~mask]) == 0
            assert (end[key(name)][mask] != start[key(name)][mask]).float().mean() > 0.9  # the survivors trained


def test_finish_refuses_a_round_whose_pruned_weights_came_back(tmp_path):
    # Something outside the mask (here a direct update, as an optimizer without masked gradients would make)
    # revived pruned weights and apply_masks() was not called: the round's scores would not be the ticket's.
    model = fresh_model()
    manager = IMPManager(model, IMPConfig(imp_rounds=1, imp_seed=0), tmp_path)
    with pytest.raises(TicketError, match=r"apply_masks\(\) after every optimizer.step"):
        for rnd in manager.rounds():
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1e-3)
            rnd.finish({"eval_accuracy": 0.5})
    assert (tmp_path / "round_00" / "metrics.json").exists()  # round 0 is dense: nothing to revive
    assert not (tmp_path / "round_01" / "metrics.json").exists()


def test_rewind_restores_theta0_for_surviving_weights_and_the_head(imp_run):
    theta0, probe = imp_run.theta0, imp_run.probe
    for r in (1, 2, 3):
        # Every tensor at round start is θ0 (pruned weights zero): encoder, embeddings AND the task head.
        assert_state_equal(probe[r]["start"], masked(theta0, probe[r]["ticket"]))
        # ... although the previous round had trained them away from θ0.
        for name in ("classifier.weight", "bert.encoder.layer.0.attention.self.query.weight"):
            assert not torch.equal(probe[r - 1]["end"][name], theta0[name])
    # The pitfall this guards against: a "θ0" kept by reference is the trained model, so it restores nothing.
    assert torch.equal(imp_run.aliased["classifier.weight"], imp_run.model.classifier.weight)
    assert not torch.equal(imp_run.aliased["classifier.weight"], theta0["classifier.weight"])
    params = {p.data_ptr() for p in imp_run.model.parameters()}
    assert not params & {v.data_ptr() for v in imp_run.manager.theta0.values()}
    assert_state_equal(load_file(imp_run.out / "theta0.safetensors"), theta0)


def test_rewind_to_step_i(tmp_path):
    model = fresh_model()
    theta0, probe = snapshot(model), {}
    config = IMPConfig(imp_rounds=2, rewind="step", rewind_steps=5, imp_seed=0)
    run_plain(IMPManager(model, config, tmp_path), model, probe=probe, at_steps=(5,))
    theta_5 = probe[(0, 5)]
    assert not torch.equal(theta_5["classifier.weight"], theta0["classifier.weight"])
    assert_state_equal(load_file(tmp_path / "theta_rewind.safetensors"), theta_5)
    for r in (1, 2):
        assert_state_equal(probe[r]["start"], masked(theta_5, probe[r]["ticket"]))


def test_resume_refuses_other_settings_and_other_models(imp_run):
    again = IMPManager(fresh_model(), IMPConfig(imp_rounds=3, imp_seed=0), imp_run.out)
    assert again.done and list(again.rounds()) == []  # nothing left to do
    assert again.results["rounds"] == imp_run.manager.results["rounds"]
    with pytest.raises(TicketError, match="imp_seed"):
        IMPManager(fresh_model(), IMPConfig(imp_rounds=3, imp_seed=1), imp_run.out)
    with pytest.raises(TicketError, match="other weights"):
        IMPManager(fresh_model(seed=1), IMPConfig(imp_rounds=3, imp_seed=0), imp_run.out)
    with pytest.raises(TicketError, match="new output_dir"):
        IMPManager(fresh_model(), IMPConfig(imp_rounds=4, imp_seed=0), imp_run.out)
    with pytest.raises(TicketError, match=r"sparsity_schedule: None there, '0.2,0.4' here"):
        IMPManager(fresh_model(), IMPConfig(sparsity_schedule="0.2,0.4", imp_seed=0), imp_run.out)
    with pytest.raises(
        TicketError, match=r"schedule differs .* at round 2 \(0.189+5 there, 0.15 here\)"
    ):  # capped by target_sparsity
        IMPManager(fresh_model(), IMPConfig(imp_rounds=3, target_sparsity=0.15, imp_seed=0), imp_run.out)


def test_unfinished_round_is_an_error(tmp_path):
    manager = IMPManager(fresh_model(), IMPConfig(imp_rounds=1), tmp_path)
    rounds = manager.rounds()
    next(rounds)
    with pytest.raises(TicketError, match="finish"):
        next(rounds)


# ---------------------------------------------------------------- baselines
def test_random_pruning_baseline(imp_run, tmp_path):
    model, probe = fresh_model(), {}
    run_plain(
        IMPManager(model, IMPConfig(imp_rounds=3, baseline="random_pruning", imp_seed=0), tmp_path), model, probe=probe
    )
    for r in (1, 2, 3):
        ticket, imp_ticket = probe[r]["ticket"], imp_run.probe[r]["ticket"]
        assert ticket.num_pruned == imp_ticket.num_pruned  # same schedule
        # Random masks overlap IMP's about as much as chance allows (Jaccard ~ s / (2 - s)), far from 1.
        s = ticket.sparsity
        assert pruned_sets_overlap(ticket, imp_ticket) < s / (2 - s) + 0.05
        assert_state_equal(probe[r]["start"], masked(imp_run.theta0, ticket))  # rewound to θ0 like IMP
    assert probe[1]["ticket"].equals(hf_tickets.prune(fresh_model(), 0.1, strategy="random", seed=0))
    rows = json.loads((tmp_path / "results.json").read_text())["rounds"]
    assert {r["baseline"] for r in rows} == {"random_pruning"}


def test_random_reinit_baseline_uses_imp_masks_on_fixed_random_weights(imp_run, tmp_path):
    model, probe = fresh_model(), {}
    config = IMPConfig(imp_rounds=3, baseline="random_reinit", reference_dir=str(imp_run.out), imp_seed=0)
    manager = run_plain(IMPManager(model, config, tmp_path), model, probe=probe)
    reinit = probe[0]["start"]
    name = key("encoder.layer.0.attention.self.query.weight")
    cos = torch.nn.functional.cosine_similarity(reinit[name].flatten(), imp_run.theta0[name].flatten(), dim=0)
    assert abs(float(cos)) < 0.2  # fresh random weights, not θ0
    assert not torch.equal(reinit["classifier.weight"], imp_run.theta0["classifier.weight"])
    for r in (1, 2, 3):
        assert probe[r]["ticket"].equals(imp_run.probe[r]["ticket"])  # IMP's masks
        assert_state_equal(probe[r]["start"], masked(reinit, probe[r]["ticket"]))  # the same re-init every round
    assert manager.matching_round()["full_score"] == imp_run.manager.results["rounds"][0]["eval_accuracy"]


def test_random_reinit_needs_a_complete_reference(imp_run, tmp_path):
    with pytest.raises(TicketError, match="not an IMP output_dir"):
        IMPManager(
            fresh_model(),
            IMPConfig(imp_rounds=1, baseline="random_reinit", reference_dir=str(tmp_path)),
            tmp_path / "o",
        )
    with pytest.raises(TicketError, match="schedule"):
        IMPManager(
            fresh_model(),
            IMPConfig(sparsity_schedule="0.2", baseline="random_reinit", reference_dir=str(imp_run.out)),
            tmp_path / "o",
        )
    with pytest.raises(TicketError, match=r"no ticket yet for rounds \[4\]"):
        IMPManager(
            fresh_model(),
            IMPConfig(imp_rounds=4, baseline="random_reinit", reference_dir=str(imp_run.out)),
            tmp_path / "o",
        )


def test_standard_pruning_baseline_keeps_training_without_rewind(imp_run, tmp_path):
    model, probe = fresh_model(), {}
    run_plain(
        IMPManager(model, IMPConfig(imp_rounds=3, baseline="standard_pruning", imp_seed=0), tmp_path),
        model,
        probe=probe,
    )
    assert probe[1]["ticket"].equals(imp_run.probe[1]["ticket"])  # both prune the same fine-tuned full model
    for r in (1, 2, 3):
        # Each round starts from the previous round's trained weights (head included), newly pruned: no rewind.
        assert_state_equal(probe[r]["start"], masked(probe[r - 1]["end"], probe[r]["ticket"]))
        assert_state_equal(
            load_file(tmp_path / f"round_{r - 1:02d}" / "final_weights.safetensors"), probe[r - 1]["end"]
        )
    assert pruned_sets_overlap(probe[3]["ticket"], imp_run.probe[3]["ticket"]) < 0.99
    assert not probe[3]["ticket"].equals(imp_run.probe[3]["ticket"])


# ---------------------------------------------------- matching, early-bird
def test_stop_when_the_score_leaves_the_matching_band(tmp_path):
    scores = {0: 0.90, 1: 0.895, 2: 0.80, 3: 0.90}
    config = IMPConfig(imp_rounds=3, stop_when_not_matching=True, matching_tolerance=0.01)
    manager = IMPManager(fresh_model(), config, tmp_path)
    for rnd in manager.rounds():
        rnd.finish({"eval_accuracy": scores[rnd.index]})  # no training: only the bookkeeping is under test
    assert [r["round"] for r in manager.results["rounds"]] == [0, 1, 2]
    assert manager.stopped_reason == "round 2 left the matching band" and manager.done
    assert manager.matching_round()["round"] == 1 and not (tmp_path / "round_03").exists()
    resumed = IMPManager(fresh_model(), config, tmp_path)
    assert resumed.done and list(resumed.rounds()) == []


def test_early_bird_stops_by_the_rule_and_prunes_the_weights_it_stopped_at(tmp_path):
    model, probe = fresh_model(), {}
    config = IMPConfig(imp_rounds=1, early_bird=True, early_bird_interval=2, early_bird_threshold=1.0, imp_seed=0)
    manager = run_plain(IMPManager(model, config, tmp_path), model, probe=probe)
    rows = manager.results["rounds"]
    # Checks at steps 2, 4, 6: two distances (< 1.0 always) after the first check -> stop at step 6.
    assert (
        rows[0]["train_steps"] == 6 and rows[0]["early_bird_stopped"] and rows[0]["early_bird_steps_saved"] == STEPS - 6
    )
    assert (
        rows[1]["train_steps"] == STEPS and not rows[1]["early_bird_stopped"]
    )  # last round: nothing to prune after it
    stopped_at = fresh_model()
    stopped_at.load_state_dict(probe[0]["end"])
    assert probe[1]["ticket"].equals(hf_tickets.prune(stopped_at, 0.1, ticket=probe[0]["ticket"]))
    assert manager.results["early_bird_steps_saved"] == STEPS - 6


def test_early_bird_default_threshold_follows_its_rule(tmp_path):
    model, seen = fresh_model(), {}
    config = IMPConfig(imp_rounds=2, early_bird=True, early_bird_interval=2, imp_seed=0)
    manager = IMPManager(model, config, tmp_path)
    for rnd in manager.rounds(total_steps=40):
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        for step, (ids, labels) in enumerate(DataLoader(TRAIN, batch_size=4, shuffle=True)):
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            manager.apply_masks()
            if rnd.should_stop or step + 1 == 40:
                break
        seen[rnd.index] = (list(rnd.early_bird_distances), rnd.steps, rnd.should_stop)
        rnd.finish({"eval_accuracy": accuracy(model)})
    for index, (distances, steps, stopped) in seen.items():
        assert all(0.0 <= d <= 1.0 for _, d in distances)
        settled = [
            s for i, (s, _) in enumerate(distances) if i >= 1 and max(d for _, d in distances[i - 1 : i + 1]) < 0.1
        ]
        assert stopped == bool(settled) and steps == (settled[0] if settled else min(40, len(TRAIN) // 4))
    assert seen[2][0] == []  # the last round has no next mask to watch


@pytest.mark.parametrize("trained", [False, True])
def test_early_bird_warns_when_its_mask_was_there_before_training(tmp_path, caplog, trained):
    model, other = fresh_model(), fresh_model(seed=1).state_dict()
    config = IMPConfig(imp_rounds=1, early_bird=True, early_bird_interval=2, imp_seed=0)
    manager = IMPManager(model, config, tmp_path)
    with caplog.at_level(logging.WARNING, logger="hf_tickets.training.imp.rounds"):
        for rnd in manager.rounds(total_steps=4):
            for _ in range(4 if rnd.index == 0 else 0):
                if trained:  # "training" that replaces every weight: the magnitude mask is a new one
                    model.load_state_dict(other)
                manager.apply_masks()  # untrained: the weights stay θ0, so does the mask
            rnd.finish({"eval_accuracy": 0.5})
    first, last = manager.results["rounds"]
    warned = [r.getMessage() for r in caplog.records if "before training" in r.getMessage()]
    if trained:
        # Two random inits share ~10% of their lowest 10%: ~90% of the weights to prune differ.
        assert first["early_bird_start_distance"] > 0.8 and not warned
    else:
        assert first["early_bird_start_distance"] == 0.0
        assert len(warned) == 1 and "round 0: at step 2" in warned[0] and "by only 0.000" in warned[0]
    assert last["early_bird_start_distance"] is None  # the last round has no next mask: no check
    saved = json.loads((tmp_path / "round_00" / "metrics.json").read_text())
    assert saved["early_bird_start_distance"] == first["early_bird_start_distance"]


# ------------------------------------------------------------------ Trainer
class DictData(torch.utils.data.Dataset):
    def __init__(self, data):
        self.ids, self.labels = data.tensors

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def compute_accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def trainer_for(model, rnd, callbacks=(), **overrides):
    args = dict(
        output_dir=str(rnd.checkpoint_dir),
        use_cpu=True,
        report_to=[],
        max_steps=6,
        learning_rate=1e-3,
        weight_decay=0.1,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    args.update(overrides)
    return Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=DictData(TRAIN),
        eval_dataset=DictData(EVAL),
        compute_metrics=compute_accuracy,
        callbacks=list(callbacks),
    )


def test_trainer_rounds_restart_the_learning_rate_schedule(tmp_path):
    model, trainers = fresh_model(), []

    def build(model, rnd):
        trainers.append(trainer_for(model, rnd))
        return trainers[-1]

    results = IMPManager(model, IMPConfig(imp_rounds=2, imp_seed=0), tmp_path).run_with_trainer(build)
    lrs = [[e["learning_rate"] for e in t.state.log_history if "learning_rate" in e] for t in trainers]
    # Linear decay over each round's 6 steps: the lr logged at step k is 1e-3 * (1 - (k - 1) / 6).
    for before, after in zip(lrs, lrs[1:]):
        assert before == sorted(before, reverse=True) and before[-1] == pytest.approx(
            1e-3 / 6
        )  # decayed within the round
        assert after[0] == pytest.approx(1e-3)  # ... and the next round starts again at the peak
    rows = results["rounds"]
    assert [r["sparsity"] for r in rows] == pytest.approx([0.0, 0.1, 0.19], abs=1e-3)
    assert all("eval_accuracy" in r and "eval_loss" in r and "train_loss" in r and r["train_steps"] == 6 for r in rows)
    ticket = Ticket.from_pretrained(tmp_path / "round_02" / "ticket")
    params = ticket.parameters_of(model)
    assert all(torch.count_nonzero(params[n].detach()[~m]) == 0 for n, m in ticket.masks.items())


def test_trainer_must_be_new_each_round_and_save_in_the_round(tmp_path):
    model, built = fresh_model(), []

    def same_trainer(model, rnd):
        built.append(built[0] if built else trainer_for(model, rnd))
        built[-1].args.output_dir = str(rnd.checkpoint_dir)
        return built[-1]

    with pytest.raises(TicketError, match="new one every round"):
        IMPManager(model, IMPConfig(imp_rounds=1), tmp_path / "a").run_with_trainer(same_trainer)
    with pytest.raises(TicketError, match="checkpoint_dir"):
        IMPManager(model, IMPConfig(imp_rounds=1), tmp_path / "b").run_with_trainer(
            lambda model, rnd: trainer_for(model, rnd, output_dir=str(tmp_path / "elsewhere"))
        )


class Interrupt(Exception):
    pass


class InterruptAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupt


class FirstStep(TrainerCallback):
    def __init__(self):
        self.step = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.step is None:
            self.step = state.global_step


def test_trainer_checkpoint_resume_restores_the_mask(tmp_path):
    config = IMPConfig(imp_rounds=2, imp_seed=0)
    save = dict(save_strategy="steps", save_steps=2)
    IMPManager(fresh_model(), config, tmp_path / "whole").run_with_trainer(lambda m, r: trainer_for(m, r, **save))

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):  # killed in round 1 after checkpoint-4 was written
        IMPManager(fresh_model(), config, out).run_with_trainer(
            lambda m, r: trainer_for(m, r, [InterruptAt(4)] if r.index == 1 else [], **save)
        )
    incomplete = out / "round_01" / "checkpoints" / "checkpoint-6"
    incomplete.mkdir()  # a checkpoint the kill cut short: no trainer_state.json, no ticket
    (incomplete / "config.json").write_text("{")

    probes, trainers = {}, {}

    def build(model, rnd):
        probes[rnd.index] = FirstStep()
        trainers[rnd.index] = trainer_for(model, rnd, [probes[rnd.index]], **save)
        return trainers[rnd.index]

    manager = IMPManager(fresh_model(seed=0), config, out)
    assert manager.current_round is None and [r["round"] for r in manager.results["rounds"]] == [0]
    manager.run_with_trainer(build)
    assert probes[1].step == 4 and probes[2].step == 0  # round 1 continued from checkpoint-4
    assert json.loads((incomplete / "config.json").read_text())  # the broken one was removed, then saved anew
    callback = next(c for c in trainers[1].callback_handler.callbacks if isinstance(c, TicketCallback))
    assert callback.ticket.equals(manager.round_ticket(1))
    assert Ticket.from_pretrained(out / "round_01" / "checkpoints" / "checkpoint-6").equals(manager.round_ticket(1))
    whole, resumed = all_masks(tmp_path / "whole"), all_masks(out)
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


# ------------------------------------------------------- processes, kills
def script(out, head_seed):
    """The kill script; ``head_seed`` inits the task head (θ0's head comes from the run's first start)."""
    return [
        sys.executable,
        str(TESTS / "imp_kill_script.py"),
        str(out),
        "--rounds",
        "4",
        "--steps",
        "60",
        "--head_seed",
        str(head_seed),
    ]


def run_until(cmd, ready: Callable, delay: float = 0.0, timeout: float = 60.0) -> int:
    """Start ``cmd``; SIGKILL it ``delay`` s after ``ready()`` turns true. Returns its exit code."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                return process.returncode
            assert time.monotonic() < deadline, "the IMP script did not get there in time"
            time.sleep(0.005)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        return process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_kill_and_resume_ends_with_the_masks_of_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = subprocess.Popen(script(whole, 1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    # SIGKILL at a random moment after round 0 is complete: in a later round's training, pruning or file writes.
    delay = random.Random(os.getpid()).uniform(0, 0.3)
    code = run_until(script(killed, 1), lambda: (killed / "round_00" / "metrics.json").exists(), delay=delay)
    assert code == -signal.SIGKILL and not (killed / "round_04" / "metrics.json").exists()
    # The rerun builds its model with another task head: only the θ0 saved by the first start continues the run.
    finished = subprocess.run(script(killed, 2), capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "resuming" in finished.stderr, finished.stderr[-2000:]

    output, _ = uninterrupted.communicate(timeout=60)
    assert uninterrupted.returncode == 0, output.decode()
    a, b = all_masks(whole), all_masks(killed)
    assert len(a) == 5 * 12 and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_a = json.loads((whole / "results.json").read_text())["rounds"]
    rows_b = json.loads((killed / "results.json").read_text())["rounds"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_time_s"} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)  # same training, to the last bit: same scores
    for path in killed.rglob("*"):  # nothing half-written: every file parses
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_ddp_prune_identically_on_every_rank(tmp_path):
    # The paper code pruned `model.module` on one rank only; here every rank must hold the same masks and weights.
    out, probe = tmp_path / "out", tmp_path / "probe"
    cmd = [
        VENV_BIN / "torchrun",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        TESTS / "imp_kill_script.py",
        out,
        "--rounds",
        "2",
        "--steps",
        "10",
        "--probe",
        probe,
    ]
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = load_file(probe / "rank0.safetensors"), load_file(probe / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    final = Ticket.from_pretrained(out / "round_02" / "ticket")
    assert final.sparsity == pytest.approx(0.19, abs=1e-3)
    for name, mask in final.masks.items():
        assert torch.equal(rank1[f"round2/{name}"], mask)
        assert torch.count_nonzero(rank1[f"weight/bert.{name}"][~mask]) == 0  # rank 1 pruned too
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and len(results["rounds"]) == 3
    assert not list(out.rglob("*.tmp"))


def test_a_truncated_run_file_is_an_error_naming_it(tmp_path):
    from hf_tickets.training.results import read_json

    path = tmp_path / "metrics.json"
    path.write_text('{"eval_accuracy": 0.7')
    with pytest.raises(TicketError, match=r"metrics\.json: unreadable"):
        read_json(path)
