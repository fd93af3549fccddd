"""IMP rounds with the stock ``Trainer``: one new Trainer per round, resumable from its checkpoints.

A round interrupted after a checkpoint resumes from it. What the round did before the interruption
travels in the checkpoint's ``trainer_state.json`` (``RoundClock``, an ``ExportableState``
callback: training time, and the sum of the logged losses), so the round's record is the whole
round's: train loss over all its steps, runtime summed over the resumptions. The Trainer's
training arguments (minus paths, logging and reporting) and the datasets' sizes and fingerprints
are part of the run's identity: resuming with others is an error naming the setting.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Trainer, TrainerCallback, TrainerState
from transformers.trainer_callback import ExportableState
from transformers.utils import SAFE_WEIGHTS_NAME

from hf_tickets.core.collectives import on_main
from hf_tickets.core.errors import TicketError
from hf_tickets.core.shards import load_full_state_dict
from hf_tickets.core.targets import unwrap_model
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket
from hf_tickets.training.callback import TicketCallback
from hf_tickets.training.imp.rounds import IMPRound

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
#: TrainingArguments that change where things are written, what is logged or how fast, not what is computed.
NOT_IDENTITY_PREFIXES = (
    "output_dir",
    "logging_",
    "log_",
    "report_to",
    "run_name",
    "project",
    "push_to_hub",
    "hub_",
    "trackio_",
    "save_",
    "disable_tqdm",
    "resume_from_checkpoint",
    "restore_callback_states_from_checkpoint",
    "local_rank",
    "skip_memory_metrics",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context",
    "ddp_timeout",
)


#: Training arguments that set how long a round trains (pinned separately for round 0).
ROUND_LENGTH = ("max_steps", "num_train_epochs")


def run_with_trainer(
    manager,
    build_trainer: Callable[[nn.Module, IMPRound], Any],
    evaluate: Callable[[Any], Mapping[str, Any]] | None = None,
) -> dict:
    """``IMPManager.run_with_trainer``: the remaining rounds of ``manager``, one new Trainer each."""
    seen: weakref.WeakSet = weakref.WeakSet()
    for rnd in manager.rounds(mask_gradients=False):  # TicketCallback masks
        trainer = build_trainer(manager.model, rnd)
        _check_trainer(trainer, rnd, manager.model, seen)
        identity = training_identity(trainer.args)
        length = {k: identity.pop(k, None) for k in ROUND_LENGTH}
        manager.pin_identity("trainer", identity)
        # Round 0 (the full model) may be cut short: a baseline's round 0 repeats IMP's dense fine-tune, so
        # the demo and the reproduction run it for one step. The pruned rounds share one length.
        manager.pin_identity("round_length" if rnd.index else "round_0_length", length)
        manager.pin_identity("data", data_identity(trainer))
        checkpoint = on_main(lambda: _resumable_checkpoint(rnd))
        earlier = _earlier_progress(checkpoint)
        trainer.add_callback(TicketCallback(rnd.ticket, verify_base=manager.verify_base))
        trainer.add_callback(RoundSteps(rnd))
        trainer.add_callback(RoundClock(**earlier))
        start = time.perf_counter()
        if checkpoint is not None and earlier["finished"] and _load_finished_checkpoint(trainer, checkpoint):
            # The Trainer would take one more step after a resume, even at max_steps: the round's
            # training is done, only its weights and state were needed.
            logger.info("IMP round %d: its training had finished; weights and state from %s", rnd.index, checkpoint)
            metrics = {}
        else:
            if checkpoint is not None:
                logger.info("IMP round %d: resuming from %s", rnd.index, checkpoint)
            metrics = dict(trainer.train(resume_from_checkpoint=checkpoint).metrics)
        train_time = earlier["train_runtime"] + time.perf_counter() - start
        if checkpoint is not None:
            metrics.update(_whole_round_train_metrics(metrics, earlier, trainer.state.global_step, checkpoint))
        if evaluate is not None:
            metrics.update(evaluate(trainer))
        elif trainer.eval_dataset is not None:
            metrics.update(trainer.evaluate())
        batches = importance_batches(trainer, manager.config) if not rnd.is_last else None
        rnd.finish(metrics, trainer.state.global_step, trainer.state.max_steps, train_time, batches)
    return manager.results


def importance_batches(trainer, config) -> list | None:
    """With ``unit_score="importance"``: the first ``importance_batches`` batches of the round's train loader.

    Drawn under ``imp_seed`` (the training's random state untouched), so every run and every resume scores
    the same batches; the loader places them on the model's device.
    """
    if config.unit_score != "importance":
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.imp_seed)
        return list(itertools.islice(trainer.get_train_dataloader(), config.importance_batches))


class RoundSteps(TrainerCallback):
    """Tells the round about each optimizer step (θ_i capture, early-bird), and stops the Trainer when told."""

    def __init__(self, rnd: IMPRound):
        self.rnd = rnd

    def on_step_end(self, args, state, control, **kwargs):
        if self.rnd.step_completed(state.global_step):
            control.should_training_stop = True


class RoundClock(TrainerCallback, ExportableState):
    """What the round did so far, saved in every checkpoint's trainer_state.json (``stateful_callbacks``).

    Built from plain numbers only, so a Trainer restoring callback states rebuilds it as it was.
    """

    def __init__(self, train_runtime: float = 0.0, loss_sum: float = 0.0, loss_steps: int = 0, finished: bool = False):
        self.train_runtime, self.loss_sum, self.loss_steps = float(train_runtime), float(loss_sum), int(loss_steps)
        self.finished = bool(finished)  # the Trainer stops after this step (max_steps, early-bird)
        self._started, self._last_logged_step = time.perf_counter(), 0

    def on_step_end(self, args, state, control, **kwargs):
        # Added after the Trainer's own flow callback and RoundSteps: sees the stop they decided.
        self.finished = bool(control.should_training_stop) or state.global_step >= state.max_steps
        if control.should_save and state.global_step > self._last_logged_step:
            # Log the loss before this checkpoint is written (the Trainer logs, then saves), so the
            # checkpoint holds the loss of every step so far: a round resumed from it reports its whole loss.
            control.should_log = True

    def on_train_begin(self, args, state, control, **kwargs):
        self._started, self._last_logged_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The Trainer logs the mean loss of the steps since its last log (or since the resume).
        if logs and "loss" in logs and state.global_step > self._last_logged_step:
            steps = state.global_step - self._last_logged_step
            self.loss_sum += float(logs["loss"]) * steps
            self.loss_steps += steps
            self._last_logged_step = state.global_step

    def state(self) -> dict:
        runtime = self.train_runtime + time.perf_counter() - self._started
        args = {"train_runtime": runtime, "loss_sum": self.loss_sum, "loss_steps": self.loss_steps}
        return {"args": {**args, "finished": self.finished}}


def _earlier_progress(checkpoint: str | None) -> dict:
    """``RoundClock``'s numbers as saved with ``checkpoint`` (zeros for a fresh round)."""
    progress = {"train_runtime": 0.0, "loss_sum": 0.0, "loss_steps": 0, "finished": False}
    if checkpoint is None:
        return progress
    path = Path(checkpoint) / TRAINER_STATE_FILE
    try:
        saved = json.loads(path.read_text()).get("stateful_callbacks", {}).get(RoundClock.__name__)
    except (OSError, ValueError) as err:
        raise TicketError(f"{path}: unreadable trainer state ({err})") from err
    if isinstance(saved, list):
        saved = saved[0] if saved else None
    if not isinstance(saved, Mapping) or not isinstance(saved.get("args"), Mapping):
        logger.warning("IMP: %s has no record of the round's earlier training; its train metrics cover the rest", path)
        return progress
    args = saved["args"]
    try:
        return {k: type(v)(args.get(k, v)) for k, v in progress.items()}
    except (TypeError, ValueError) as err:
        raise TicketError(f"{path}: stateful_callbacks.{RoundClock.__name__}.args is malformed ({args!r})") from err


def _whole_round_train_metrics(metrics: Mapping, earlier: Mapping, global_step: int, checkpoint: str) -> dict:
    """Train metrics of the whole round from those of its last part (after ``checkpoint``) and the earlier ones."""
    resumed_at = int(Path(checkpoint).name.rsplit("-", 1)[-1])
    steps_now = max(global_step - resumed_at, 0)
    runtime_now = float(metrics.get("train_runtime") or 0.0)
    runtime = earlier["train_runtime"] + runtime_now
    whole = {"train_runtime": round(runtime, 4)}
    loss_steps = earlier["loss_steps"] + steps_now
    if loss_steps:
        # The Trainer's train_loss is the mean over the steps of this call; weigh it by them.
        loss_sum = earlier["loss_sum"] + float(metrics.get("train_loss") or 0.0) * steps_now
        whole["train_loss"] = loss_sum / loss_steps
        if loss_steps < global_step:
            logger.info(
                "IMP: train_loss averages the %d of %d steps whose losses were logged before the interruption",
                loss_steps,
                global_step,
            )
    else:
        whole["train_loss"] = None  # no step's loss is known: not 0.0
    if runtime > 0:
        whole["train_steps_per_second"] = round(global_step / runtime, 3)
        per_second, steps_per_second = metrics.get("train_samples_per_second"), metrics.get("train_steps_per_second")
        if per_second and steps_per_second:
            whole["train_samples_per_second"] = round(per_second / steps_per_second * global_step / runtime, 3)
    return whole


def _load_finished_checkpoint(trainer, checkpoint: str) -> bool:
    """The weights and TrainerState of a checkpoint saved at the end of training (False: not a plain checkpoint)."""
    weights = Path(checkpoint) / SAFE_WEIGHTS_NAME
    if not weights.is_file():  # sharded (FSDP, DeepSpeed) checkpoints: the Trainer loads them
        return False
    load_full_state_dict(trainer.model, load_file(weights), strict=False)  # tied weights are saved once
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_FILE))
    return True


def training_identity(args) -> dict:
    """The training arguments that change what a round computes."""
    return {k: v for k, v in args.to_dict().items() if not k.startswith(NOT_IDENTITY_PREFIXES)}


def data_identity(trainer) -> dict:
    """Size and (🤗 Datasets) fingerprint of the train and eval datasets."""
    identity = {}
    for name in ("train_dataset", "eval_dataset"):
        data = getattr(trainer, name, None)
        if data is None:
            continue
        identity[f"{name}_size"] = len(data) if hasattr(data, "__len__") else None
        fingerprint = getattr(data, "_fingerprint", None)
        if fingerprint is not None:
            identity[f"{name}_fingerprint"] = fingerprint
    return identity


def _check_trainer(trainer, rnd: IMPRound, model: nn.Module, seen: weakref.WeakSet) -> None:
    if not isinstance(trainer, Trainer):
        raise TicketError(f"build_trainer must return a transformers.Trainer, got {type(trainer).__name__}")
    if trainer in seen:
        raise TicketError(
            "build_trainer returned the Trainer of an earlier round: build a new one every round, "
            "else its optimizer state and (decayed) learning-rate schedule carry over"
        )
    seen.add(trainer)
    if unwrap_model(trainer.model) is not unwrap_model(model):
        raise TicketError("build_trainer must build the Trainer on the model it is given (the manager's model)")
    if Path(trainer.args.output_dir).resolve() != rnd.checkpoint_dir.resolve():
        raise TicketError(
            f"the round's Trainer must save under round.checkpoint_dir ({rnd.checkpoint_dir}), "
            f"not {trainer.args.output_dir}: resuming looks for its checkpoints there"
        )


def _resumable_checkpoint(rnd: IMPRound) -> str | None:
    """The round's newest complete checkpoint (Trainer files and ticket); incomplete ones are removed."""
    found = None
    if rnd.checkpoint_dir.is_dir():
        steps = sorted(
            (int(p.name.split("-")[-1]), p)
            for p in rnd.checkpoint_dir.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit()
        )
        for _, path in reversed(steps):
            complete = all((path / f).is_file() for f in (TRAINER_STATE_FILE, MASKS_FILE, CONFIG_FILE))
            if complete and found is None:
                found = path
            elif not complete:
                logger.warning("IMP round %d: removing incomplete checkpoint %s", rnd.index, path)
                shutil.rmtree(path, ignore_errors=True)
        if found is not None and not Ticket.from_pretrained(found).equals(rnd.ticket):
            raise TicketError(f"{found} holds another ticket than round {rnd.index}'s: it is not from this run")
    return str(found) if found is not None else None
