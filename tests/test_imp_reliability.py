"""IMP runs that are killed, resumed with other settings or started twice (issue 15, items 2, 3 and 4).

Kills are real SIGKILLs of real processes (tests/imp_kill_script.py kills itself at a chosen point
with ``--kill_at``, or the test kills it from outside); the rerun is the same command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from imp_kill_script import DictData, token_five_data
from safetensors.torch import load_file
from tiny import tiny_model
from transformers import BertForSequenceClassification, Trainer, TrainingArguments

from hf_tickets.core.errors import TicketError
from hf_tickets.core.structured import units_of
from hf_tickets.core.ticket import Ticket
from hf_tickets.training.imp import IMPConfig, IMPManager
from hf_tickets.training.imp.run_state import LOCK_FILE, OutputDirLock

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def script(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(TESTS / "imp_kill_script.py"), str(out), *extra]


def run(cmd: list[str], expect_kill: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    expected = -signal.SIGKILL if expect_kill else 0
    assert done.returncode == expected, (done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return done


def rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["rounds"]


TRAINER = ("--trainer", "--rounds", "1", "--steps", "8", "--save_steps", "4", "--logging_steps", "2")


# ------------------------------------------------- item 2: resumed rounds
@pytest.mark.parametrize("kill_at", ["train_end:1", "step:1:5", "step:0:6"])
def test_a_round_resumed_from_its_checkpoint_records_what_the_whole_round_did(tmp_path, kill_at):
    """train_end:1 = after round 1's last checkpoint, before its metrics.json (it used to record train_loss 0.0);
    step:R:S = in round R, one or two steps after its checkpoint at step 4."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(script(whole, *TRAINER))
    run(script(killed, *TRAINER, "--kill_at", kill_at), expect_kill=True)
    index = int(kill_at.split(":")[1])
    assert not (killed / f"round_{index:02d}" / "metrics.json").exists()
    resumed = run(script(killed, *TRAINER))
    assert "resuming from" in resumed.stderr or "its training had finished" in resumed.stderr

    a, b = rows(whole), rows(killed)
    assert [r["round"] for r in b] == [0, 1] and [r["train_steps"] for r in b] == [8, 8]
    for row_a, row_b in zip(a, b):
        assert row_b["train_loss"] == pytest.approx(row_a["train_loss"], rel=1e-4)  # the whole round's mean
        assert row_b["train_loss"] > 0.01
        assert row_b["eval_loss"] == pytest.approx(row_a["eval_loss"], rel=1e-4)
    # Runtime summed over the resumptions: at least what the checkpoint says the earlier part took.
    state = json.loads(
        (killed / f"round_{index:02d}" / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text()
    )
    earlier = state["stateful_callbacks"]["RoundClock"]["args"]["train_runtime"]
    assert b[index]["train_runtime"] >= earlier > 0
    # The ticket's provenance and results.csv carry the same numbers as the round's metrics.json.
    provenance = json.loads((killed / f"round_{index:02d}" / "ticket" / "ticket_config.json").read_text())["provenance"]
    assert provenance["metrics"]["train_loss"] == b[index]["train_loss"]
    assert (
        json.loads((killed / f"round_{index:02d}" / "metrics.json").read_text())["train_loss"] == b[index]["train_loss"]
    )


# A structured run (issue 18): the kill lands in round 1, after its checkpoint at step 4; round 2's masks are
# pruned from the weights round 1 ends with, which the resumed round must reproduce bit for bit.
def test_a_killed_structured_run_resumes_with_identical_masks_in_every_round(tmp_path):
    structured = ("--trainer", "--rounds", "2", "--steps", "8", "--save_steps", "4", "--strategy", "heads+neurons")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(script(whole, *structured))
    run(script(killed, *structured, "--kill_at", "step:1:5"), expect_kill=True)
    assert not (killed / "round_01" / "metrics.json").exists() and not (killed / "round_02").exists()
    resumed = run(script(killed, *structured))
    assert "resuming from" in resumed.stderr

    pruned = []
    for index in range(3):
        masks = f"round_{index:02d}/ticket/ticket_masks.safetensors"
        a, b = load_file(whole / masks), load_file(killed / masks)
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), f"round {index}"
        ticket = Ticket.from_pretrained(killed / f"round_{index:02d}" / "ticket")
        assert ticket.config.strategy == "heads+neurons"
        views = [
            v for layer in units_of(ticket.masks, ("head", "neuron"), 2) for u in layer for v in u.views(ticket.masks)
        ]
        assert all(bool(v.all()) or not v.any() for v in views)  # whole units only
        pruned.append(ticket.num_pruned)
    assert pruned[0] == 0 < pruned[1] < pruned[2]
    # What round 2 was pruned from: round 1's trained weights, the same bit for bit after the resume.
    trained = "round_01/checkpoints/checkpoint-8/model.safetensors"
    a, b = load_file(whole / trained), load_file(killed / trained)
    assert all(torch.equal(a[n], b[n]) for n in a)


# ------------------------------------------ item 3: summary from the rounds
@pytest.mark.parametrize("mode", [(), TRAINER])
def test_a_kill_between_the_last_metrics_and_results_is_repaired_by_rerunning(tmp_path, mode):
    out = tmp_path / "out"
    extra = mode or ("--rounds", "2", "--steps", "6")
    last = 1 if mode else 2
    run(script(out, *extra, "--kill_at", f"summary:{last}"), expect_kill=True)
    assert (out / f"round_{last:02d}" / "metrics.json").exists()
    stale = json.loads((out / "results.json").read_text())
    assert len(stale["rounds"]) == last and not stale["complete"]  # what the kill left

    run(script(out, *extra))
    results = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == list(range(last + 1)) and results["complete"]
    for r in results["rounds"]:
        assert r == {
            **json.loads((out / f"round_{r['round']:02d}" / "metrics.json").read_text()),
            **{k: r[k] for k in ("full_score", "full_std")},
        }
    assert len((out / "results.csv").read_text().splitlines()) == last + 2  # header + one line per round


# ------------------------------------------------------ item 4: the lock
def fresh_model():
    torch.manual_seed(0)
    return tiny_model(BertForSequenceClassification)


def train_plain(manager, model, rounds_to_finish: int, steps: int = 3):
    data = token_five_data(64, seed=0)
    for n, rnd in enumerate(manager.rounds()):
        if n == rounds_to_finish:
            break
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for i in range(steps):
            ids, labels = data.tensors[0][i * 8 : (i + 1) * 8], data.tensors[1][i * 8 : (i + 1) * 8]
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            manager.apply_masks()
        rnd.finish({"eval_accuracy": 0.5})


def test_a_second_live_run_in_the_same_output_dir_fails_at_once_naming_the_holder(tmp_path):
    model = fresh_model()
    first = IMPManager(model, IMPConfig(imp_rounds=2), tmp_path)
    with pytest.raises(TicketError, match=rf"in use by another IMP run \(pid {os.getpid()} on {socket.gethostname()}"):
        IMPManager(fresh_model(), IMPConfig(imp_rounds=2), tmp_path)
    train_plain(first, model, rounds_to_finish=3)  # the first run is not disturbed, and releases at the end
    assert first.done
    again = IMPManager(fresh_model(), IMPConfig(imp_rounds=2), tmp_path)
    assert again.done and (tmp_path / LOCK_FILE).read_text() == ""  # nothing left to do: released at once


def test_lock_between_processes_and_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    # --hold: the holder stays inside round 0 until killed (a short run could finish and release the lock
    # before the kill, on a fast machine: seen in CI as an empty lock file)
    holder = subprocess.Popen(script(out, "--rounds", "2", "--hold"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ((out / LOCK_FILE).is_file() and (out / LOCK_FILE).read_text()):
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        second = subprocess.run(
            script(out, "--rounds", "2", "--steps", "400"), capture_output=True, text=True, timeout=120
        )
        assert second.returncode != 0
        assert f"in use by another IMP run (pid {holder.pid} on {socket.gethostname()}" in second.stderr
        assert holder.poll() is None  # the first run goes on
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # the dead holder's name stays
    rerun = run(script(out, "--rounds", "2", "--steps", "6"))
    assert f"taking over the lock on {out} left by pid {holder.pid}" in rerun.stderr


# -------------------------------------------------- item 4: the identity
def test_resuming_with_other_settings_names_the_setting(tmp_path):
    model = fresh_model()
    manager = IMPManager(model, IMPConfig(imp_rounds=3, prune_fraction=0.2), tmp_path, run_identity={"lr": 3e-3})
    train_plain(manager, model, rounds_to_finish=1)
    with pytest.raises(TicketError, match=r"run_identity lr: 0\.003 there, 0\.001 here"):
        IMPManager(fresh_model(), IMPConfig(imp_rounds=3, prune_fraction=0.2), tmp_path, run_identity={"lr": 1e-3})
    with pytest.raises(TicketError, match=r"config prune_fraction: 0\.2 there, 0\.1 here"):
        IMPManager(fresh_model(), IMPConfig(imp_rounds=3, prune_fraction=0.1), tmp_path, run_identity={"lr": 3e-3})
    with pytest.raises(TicketError, match=r"run_identity lr: 0\.003 there, '<unset>' here"):
        IMPManager(fresh_model(), IMPConfig(imp_rounds=3, prune_fraction=0.2), tmp_path)
    resumed = IMPManager(
        fresh_model(), IMPConfig(imp_rounds=3, prune_fraction=0.2), tmp_path, run_identity={"lr": 3e-3}
    )
    assert resumed.current_round is None and len(resumed.results["rounds"]) == 1
    resumed.close()
    with pytest.raises(TicketError, match="run_identity must be a mapping"):
        IMPManager(fresh_model(), IMPConfig(), tmp_path / "other", run_identity=[("lr", 1)])


class StopAfterRound0(Exception):
    pass


def trainer_run(out: Path, learning_rate=1e-3, train_size=64, stop_after_round_0=False):
    model = fresh_model()
    manager = IMPManager(model, IMPConfig(imp_rounds=2), out)

    def build(model, rnd):
        if stop_after_round_0 and rnd.index == 1:
            raise StopAfterRound0
        args = TrainingArguments(
            output_dir=str(rnd.checkpoint_dir),
            use_cpu=True,
            report_to=[],
            max_steps=2,
            learning_rate=learning_rate,
            per_device_train_batch_size=8,
            save_strategy="no",
            disable_tqdm=True,
            run_name=f"run {time.monotonic_ns()}",  # names, paths and logging are not part of the identity
        )
        return Trainer(model=model, args=args, train_dataset=DictData(token_five_data(train_size, seed=0)))

    return manager.run_with_trainer(build)


def test_resuming_a_trainer_run_with_other_training_arguments_or_data_names_them(tmp_path):
    with pytest.raises(StopAfterRound0):
        trainer_run(tmp_path, stop_after_round_0=True)
    with pytest.raises(TicketError, match=r"trainer learning_rate: 0\.001 there, 0\.002 here"):
        trainer_run(tmp_path, learning_rate=2e-3)
    with pytest.raises(TicketError, match=r"data train_dataset_size: 64 there, 32 here"):
        trainer_run(tmp_path, train_size=32)
    assert [r["round"] for r in trainer_run(tmp_path)["rounds"]] == [0, 1, 2]  # same settings: resumes


def test_the_lock_file_is_only_a_lock(tmp_path):
    lock = OutputDirLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""
    lock.acquire()  # again, after a release
    lock.release()
