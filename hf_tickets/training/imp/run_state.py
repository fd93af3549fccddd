"""An IMP run's folder on disk: its files, its identity, its lock, and the summary rebuilt from the rounds.

Layout of ``output_dir`` (only the main process writes; every file is written to a temporary name
and renamed, so it is whole or absent): ``imp_state.json`` (settings and identity, written once the
run is initialised), ``theta0.safetensors``, ``theta_rewind.safetensors``, ``results.json`` and
``results.csv`` (a summary, rebuilt from the round folders on every start), ``.imp_lock`` and per
round ``round_XX/``: ``ticket/``, ``checkpoints/`` (Trainer), ``final_weights.safetensors``
(standard pruning) and ``metrics.json``, written last: a round is complete iff it exists.

Identity: every setting that changes what a round computes. A resumed run must have the same, or
it would mix rounds of two different experiments; ``check_identity`` names what differs.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hf_tickets.core.atomic_files import atomic_write, atomic_write_json
from hf_tickets.core.errors import TicketError
from hf_tickets.core.ticket import MASKS_FILE
from hf_tickets.training.results import read_json, write_results

logger = logging.getLogger(__name__)

STATE_FILE, THETA0_FILE, REWIND_FILE = "imp_state.json", "theta0.safetensors", "theta_rewind.safetensors"
METRICS_FILE, FINAL_WEIGHTS_FILE, TICKET_DIR, CHECKPOINT_DIR = (
    "metrics.json",
    "final_weights.safetensors",
    "ticket",
    "checkpoints",
)
LOCK_FILE = ".imp_lock"


class RunFolder:
    """Paths and reads/writes of one IMP ``output_dir``. Writes are for the main process only."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir)

    def round_dir(self, index: int) -> Path:
        return self.path / f"round_{index:02d}"

    def ticket_dir(self, index: int) -> Path:
        return self.round_dir(index) / TICKET_DIR

    def is_initialised(self) -> bool:
        return (self.path / STATE_FILE).is_file()

    def read_state(self) -> dict:
        return read_json(self.path / STATE_FILE)

    def write_state(self, state: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / STATE_FILE, state)

    def read_rows(self, limit: int) -> list[dict]:
        """The records of the complete rounds, round 0 first (at most ``limit``)."""
        rows = []
        while len(rows) < limit and (self.round_dir(len(rows)) / METRICS_FILE).is_file():
            rows.append(read_json(self.round_dir(len(rows)) / METRICS_FILE))
        return rows

    def write_round(self, index: int, row: Mapping[str, Any]) -> None:
        atomic_write_json(self.round_dir(index) / METRICS_FILE, row)  # last: the round is complete

    def write_summary(self, results: Mapping[str, Any]) -> None:
        write_results(self.path, results)

    def save_weights(self, name: str, state: dict[str, torch.Tensor], index: int | None = None) -> None:
        path = (self.path if index is None else self.round_dir(index)) / name
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))

    def load_weights(self, name: str, index: int | None = None) -> dict[str, torch.Tensor] | None:
        path = (self.path if index is None else self.round_dir(index)) / name
        if not path.is_file():
            return None
        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise TicketError(
                f"{path}: unreadable weights file ({err}); it was not written by a finished step"
            ) from err


# ------------------------------------------------------------------ lock
class OutputDirLock:
    """An exclusive lock on an output_dir, held by one live process at a time.

    ``flock`` on ``.imp_lock``: the kernel drops it when the holder exits, however it exits, so a
    lock left by a killed run is free; its file still names the dead holder, which is logged when
    the lock is taken over. The file is written in place, not renamed: the lock lives on its inode.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_FILE
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(file)
            file.close()
            raise TicketError(
                f"{self.path.parent} is in use by another IMP run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('started', '?')}): wait for it to end or use "
                "another output_dir"
            ) from None
        previous = _holder(file)
        if previous:
            logger.warning(
                "IMP: taking over the lock on %s left by pid %s on %s (started %s), which is no longer running",
                self.path.parent,
                previous.get("pid", "?"),
                previous.get("host", "?"),
                previous.get("started", "?"),
            )
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.datetime.now().isoformat()}
        file.seek(0)
        file.truncate()
        file.write(json.dumps(me))
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        file.seek(0)
        file.truncate()  # empty: nobody holds it (a name left in it means the holder died)
        file.flush()
        fcntl.flock(file, fcntl.LOCK_UN)
        file.close()


def _holder(file) -> dict:
    file.seek(0)
    try:
        holder = json.loads(file.read() or "{}")
    except ValueError:
        return {"pid": "unknown (unreadable lock file)"}
    return holder if isinstance(holder, dict) else {}


# -------------------------------------------------------------- identity
def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, objects their ``str``): comparable after a resume."""
    return json.loads(json.dumps(value, default=str))


def check_identity(output_dir: Path, recorded: Mapping[str, Mapping], current: Mapping[str, Mapping]) -> None:
    """Raise naming every setting of ``current`` that differs from ``recorded`` (sections absent there are new)."""
    differing = []
    for section, settings in current.items():
        if section not in recorded:
            continue
        old = recorded[section]
        for key in sorted(old.keys() | settings.keys()):
            if old.get(key, "<unset>") != settings.get(key, "<unset>"):
                differing.append(
                    f"{section} {key}: {old.get(key, '<unset>')!r} there, {settings.get(key, '<unset>')!r} here"
                )
    if differing:
        raise TicketError(
            f"{output_dir} holds an IMP run with other settings ({'; '.join(differing)}); "
            "rerun with the same settings or use a new output_dir"
        )


def check_schedule(output_dir: Path, recorded: list[float], schedule: list[float]) -> None:
    for r, (a, b) in enumerate(zip(recorded, schedule)):
        if abs(a - b) > 1e-12:
            raise TicketError(
                f"the sparsity schedule differs from the run in {output_dir} at round {r} "
                f"({a} there, {b} here); use a new output_dir"
            )


def check_reference(reference: Path, schedule: list[float]) -> None:
    """random_reinit: ``reference`` must be a finished IMP run on the same schedule."""
    state = RunFolder(reference).read_state() if (reference / STATE_FILE).is_file() else None
    if state is None:
        raise TicketError(f"reference_dir {reference} is not an IMP output_dir (no {STATE_FILE})")
    if state["config"].get("baseline") != "none":
        raise TicketError(f"reference_dir {reference} is a {state['config'].get('baseline')} run, not IMP")
    theirs = state["schedule"]
    if any(a != b for a, b in zip(theirs, schedule)):
        raise TicketError(f"reference_dir {reference} used the schedule {theirs}, this run {schedule}")
    missing = [r for r in range(len(schedule)) if not (RunFolder(reference).ticket_dir(r) / MASKS_FILE).is_file()]
    if missing:
        raise TicketError(
            f"reference_dir {reference} has no ticket yet for rounds {missing}: finish that IMP run first"
        )
