"""A ticket directory is written atomically as a whole: SIGKILL a real process saving it, then load.

A helper process (imported once) forks a writer per trial: the writer saves two different tickets
A and B into one directory in a loop and is SIGKILLed at a random moment, or kills itself right
before (or after) a chosen rename of a save. The helper then loads the directory: it must be
exactly A or exactly B (masks, fingerprint and config of one save), never a mix, never an error.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HELPER = r"""
import json, os, random, signal, sys, time
import torch
torch.set_num_threads(1)
from hf_tickets.core.errors import TicketError
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket, TicketConfig

def make(seed):
    g = torch.Generator().manual_seed(seed)
    masks = {f"layer{i}.weight": torch.rand(96, 96, generator=g) > 0.3 + 0.1 * seed for i in range(6)}
    fingerprint = {n: torch.randn(32, generator=g) for n in masks}
    return Ticket(masks, TicketConfig(base_model=f"base-{seed}", provenance={"seed": seed}), fingerprint)

def which(loaded, tickets):
    for label, t in tickets.items():
        if (loaded.equals(t) and loaded.config.base_model == t.config.base_model
                and all(torch.equal(loaded.fingerprint[n], v) for n, v in t.fingerprint.items())):
            return label
    return "mix"

directory, mode, trials, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
tickets = {"A": make(1), "B": make(2)}
counts = {"A": 0, "B": 0, "mix": 0, "error": 0}
errors, leftovers = [], 0
for trial in range(trials):
    tickets["A"].save_pretrained(directory)
    pid = os.fork()
    if pid == 0:  # the writer
        if mode in ("random", "reads"):
            while True:
                tickets["B"].save_pretrained(directory)
                tickets["A"].save_pretrained(directory)
        kill_at, calls, real_replace = trial, [0], os.replace
        def replace(src, dst):
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            real_replace(src, dst)
        os.replace = replace
        tickets["B"].save_pretrained(directory)
        os.kill(os.getpid(), signal.SIGKILL)  # after the last rename: the save is complete
    if mode == "random":
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(pid, signal.SIGKILL)
    if mode == "reads":  # a reader beside a live writer: never an error, never a mix
        for _ in range(100):
            try:
                counts[which(Ticket.from_pretrained(directory), tickets)] += 1
            except TicketError as err:
                counts["error"] += 1
                errors.append(str(err))
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    try:
        counts[which(Ticket.from_pretrained(directory), tickets)] += 1
    except TicketError as err:
        counts["error"] += 1
        errors.append(str(err))
    leftovers += sum(1 for p in os.listdir(directory) if p.endswith(".tmp"))
# The next save clears what killed writers left behind.
tickets["A"].save_pretrained(directory)
left = sorted(p for p in os.listdir(directory) if p not in (MASKS_FILE, CONFIG_FILE))
print(json.dumps({"counts": counts, "errors": errors[:3], "leftovers_seen": leftovers, "left_after_save": left}))
"""


def run_helper(tmp_path, mode: str, trials: int, seed: int = 0) -> dict:
    env = {**os.environ, "PYTHONPATH": os.environ.get("RELIABILITY_CODE_ROOT", str(ROOT))}
    out = subprocess.run(
        [sys.executable, "-c", HELPER, str(tmp_path / "ticket"), mode, str(trials), str(seed)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # `python -c` imports from the working directory first: PYTHONPATH decides the code
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kill_at_every_rename_of_a_save_leaves_the_old_ticket_or_the_new(tmp_path):
    # A save renames three times (pending config, masks, config); trial k dies before rename k, trial 3 after all.
    report = run_helper(tmp_path, "renames", trials=4)
    counts = report["counts"]
    assert counts["mix"] == 0 and counts["error"] == 0, report
    assert counts["A"] >= 1 and counts["B"] >= 1, report  # before the masks rename: old; after it: new
    assert report["left_after_save"] == [], report


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_moments_never_leaves_a_mix(tmp_path, seed):
    report = run_helper(tmp_path, "random", trials=60, seed=seed)
    counts = report["counts"]
    assert counts["mix"] == 0 and counts["error"] == 0, report
    assert counts["A"] + counts["B"] == 60
    assert report["left_after_save"] == [], report  # stale temporaries and pending configs are cleaned


def test_loads_beside_a_live_writer_see_one_ticket_or_the_other(tmp_path):
    report = run_helper(tmp_path, "reads", trials=3)
    counts = report["counts"]
    assert counts["mix"] == 0 and counts["error"] == 0, report
    assert counts["A"] + counts["B"] == 3 * 101
