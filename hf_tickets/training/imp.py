"""``IMPManager``: iterative magnitude pruning (the paper's Algorithm 1), resumable, with its baselines.

Round 0 trains the full model from θ0. After every round the trained weights are pruned (globally,
by magnitude) to the next sparsity of the schedule (``hf_tickets.core.schedules``); the next round
rewinds *every* weight, the task head included, to a clone of θ0 (or θ_i, the weights after
``rewind_steps`` steps of round 0), applies the new mask and trains with a fresh optimizer and
learning-rate schedule. Baselines (``baseline=``) follow the same schedule: ``random_pruning``
(random masks, rewound to θ0), ``random_reinit`` (the masks of the IMP run in ``reference_dir``,
on one fixed random re-initialisation) and ``standard_pruning`` (prune the trained weights and keep
training them: no rewind).

Plain (Accelerate) loop::

    manager = IMPManager(model, IMPConfig(imp_rounds=3), "out")
    for rnd in manager.rounds():               # model rewound and masked; finished rounds are skipped
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)   # fresh every round
        for batch in loader:
            model(**batch).loss.backward(); optimizer.step(); optimizer.zero_grad()
            manager.apply_masks()              # after EVERY optimizer step
            if rnd.should_stop: break          # early-bird
        rnd.finish({"eval_accuracy": evaluate(model)})

Trainer: ``manager.run_with_trainer(lambda model, rnd: Trainer(model, TrainingArguments(
output_dir=str(rnd.checkpoint_dir), ...), ...))`` builds one Trainer per round (so the LR schedule
restarts) and adds ``TicketCallback(rnd.ticket)``; an interrupted round resumes from its last checkpoint.

Files under ``output_dir`` (shared by all processes; only the main process writes, each file
written to a temporary name and renamed): ``imp_state.json``, ``theta0.safetensors``,
``theta_rewind.safetensors``, ``results.json``, ``results.csv`` and per round ``round_XX/``:
``ticket/`` (the mask trained in that round), ``checkpoints/`` (Trainer), ``final_weights.safetensors``
(standard pruning) and ``metrics.json``, written last: a round is complete iff it exists. Rerunning
the same command skips complete rounds and redoes the interrupted one from its start (or from its
last Trainer checkpoint); rounds are seeded (``imp_seed``) at their start, so a resumed run ends
with the same masks as an uninterrupted one, provided the loop draws its randomness after the round
starts: build the optimizer and the data loader inside the round (a loader that
``accelerator.prepare`` shuffles across processes gets its generator seeded when it is prepared).
"""

from __future__ import annotations

import logging
import shutil
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hf_tickets.core.atomic_files import atomic_write, atomic_write_json
from hf_tickets.core.collectives import barrier, broadcast_object, is_main_process
from hf_tickets.core.errors import TicketError
from hf_tickets.core.pruning import prune
from hf_tickets.core.shards import (
    full_state_dict,
    full_weight,
    is_dtensor,
    load_full_state_dict,
    local_mask,
    local_view,
)
from hf_tickets.core.targets import unwrap_model
from hf_tickets.core.ticket import CONFIG_FILE, FINGERPRINT_MIN_SIMILARITY, MASKS_FILE, Ticket
from hf_tickets.training.imp_config import IDENTITY, IMPConfig
from hf_tickets.training.launch import distributed_info
from hf_tickets.training.results import (
    greater_is_better,
    make_row,
    matching_ticket,
    metric_keys,
    read_json,
    resolve_tolerance,
    within_band,
    write_results,
)

logger = logging.getLogger(__name__)

STATE_FILE, THETA0_FILE, REWIND_FILE = "imp_state.json", "theta0.safetensors", "theta_rewind.safetensors"
METRICS_FILE, FINAL_WEIGHTS_FILE, TICKET_DIR, CHECKPOINT_DIR = (
    "metrics.json",
    "final_weights.safetensors",
    "ticket",
    "checkpoints",
)
REINIT_SEED_OFFSET = 1_000_003


class IMPRound:
    """One round: ``ticket`` (what is trained), ``sparsity``, ``output_dir``, ``checkpoint_dir``, early-bird state."""

    def __init__(self, manager: IMPManager, index: int, ticket: Ticket, planned_steps: int | None):
        self.manager, self.index, self.ticket = manager, index, ticket
        self.sparsity = ticket.sparsity
        self.next_sparsity = manager.schedule[index + 1] if index + 1 < len(manager.schedule) else None
        self.output_dir = manager.round_dir(index)
        self.checkpoint_dir = self.output_dir / CHECKPOINT_DIR
        self.planned_steps, self.steps = planned_steps, 0
        self.should_stop = False  # early-bird says: stop training this round
        self.early_bird_distances: list[tuple[int, float]] = []
        self.finished = False
        self._eb_last: Ticket | None = None
        self._keep: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._hooks: list = []
        self._start = time.perf_counter()

    @property
    def is_last(self) -> bool:
        return self.next_sparsity is None

    def finish(
        self,
        metrics: Mapping[str, Any],
        train_steps: int | None = None,
        planned_steps: int | None = None,
        train_time_s: float | None = None,
    ) -> None:
        """Record ``metrics``, prune to the next sparsity and save the round (metrics.json last)."""
        self.manager._finish(self, dict(metrics), train_steps, planned_steps, train_time_s)

    def step_completed(self, step: int) -> bool:
        """Optimizer step ``step`` is done: capture θ_i, run early-bird checks. True = stop the round."""
        self.steps = step
        config = self.manager.config
        if self.index == 0 and config.rewind == "step" and step == config.rewind_steps:
            self.manager._capture_rewind()
        if config.early_bird and not self.is_last and not self.should_stop and step % config.early_bird_interval == 0:
            self._early_bird_check(step)
        return self.should_stop

    def _early_bird_check(self, step: int) -> None:
        config = self.manager.config
        candidate = self.manager._next_ticket(self.ticket, self.next_sparsity, self.index)
        if self._eb_last is not None:
            changed = sum(int(torch.count_nonzero(m ^ candidate.masks[n])) for n, m in self._eb_last.masks.items())
            deciding = candidate.num_pruned - self.ticket.num_pruned  # weights this round's pruning removes
            distance = changed / (2 * deciding) if deciding else 0.0
            self.early_bird_distances.append((step, distance))
            recent = [d for _, d in self.early_bird_distances[-config.early_bird_patience :]]
            if len(recent) == config.early_bird_patience and max(recent) < config.early_bird_threshold:
                self.should_stop = True
                logger.info(
                    "IMP round %d: early-bird mask settled at step %d (changes %s)",
                    self.index,
                    step,
                    ", ".join(f"{d:.3f}" for d in recent),
                )
        self._eb_last = candidate


class IMPManager:
    """Run IMP on ``model`` (θ0 = its weights now, head included) into ``output_dir``; see the module doc."""

    def __init__(self, model: nn.Module, config: IMPConfig | None = None, output_dir: str = "imp_output"):
        self.config = config if config is not None else IMPConfig()
        if not isinstance(self.config, IMPConfig):
            raise TicketError(f"config must be an IMPConfig, got {type(self.config).__name__}")
        self.model, self._module = model, unwrap_model(model)  # never prune through a DDP/compile wrapper
        self.output_dir = Path(output_dir)
        self.schedule = self.config.schedule()
        self._main = is_main_process()
        self._reference = Path(self.config.reference_dir) if self.config.reference_dir else None
        self._verify_base = self.config.baseline in ("none", "random_pruning")
        self._distributed = distributed_info()
        self._round: IMPRound | None = None
        self._theta_rewind: dict[str, torch.Tensor] | None = None
        self._final_weights: dict[str, torch.Tensor] | None = None  # standard pruning: next round's start
        self._trainers: weakref.WeakSet = weakref.WeakSet()
        self.stopped_reason: str | None = None
        if self._reference is not None:
            self._check_reference()
        self._start_or_resume()

    # ------------------------------------------------------------ public API
    def round_dir(self, index: int) -> Path:
        return self.output_dir / f"round_{index:02d}"

    def round_ticket(self, index: int) -> Ticket:
        return Ticket.from_pretrained(self.round_dir(index) / TICKET_DIR)

    @property
    def done(self) -> bool:
        return self.stopped_reason is not None or self._next_round >= len(self.schedule)

    @property
    def current_round(self) -> IMPRound | None:
        return self._round

    def rounds(self, total_steps: int | None = None) -> Iterator[IMPRound]:
        """Plain loop: yields each remaining round with the model rewound and masked.

        ``total_steps`` (optimizer steps a round would take) only serves to report early-bird savings.
        """
        return self._rounds(total_steps, mask_gradients=True)

    def apply_masks(self) -> None:
        """Re-zero the pruned weights; call after every ``optimizer.step()`` (counts the step)."""
        rnd = self._require_round()
        if rnd.ticket.num_pruned:
            with torch.no_grad():
                for view, keep in rnd._keep:
                    view.mul_(keep)  # x * 0 is exactly 0 whatever AdamW's weight decay or momentum did
        rnd.step_completed(rnd.steps + 1)

    def run_with_trainer(
        self,
        build_trainer: Callable[[nn.Module, IMPRound], Any],
        evaluate: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> dict:
        """Run the remaining rounds with a NEW Trainer per round: ``build_trainer(model, round)``.

        Its ``args.output_dir`` must be ``round.checkpoint_dir``. Metrics: the train metrics plus
        ``evaluate(trainer)`` (default ``trainer.evaluate()`` if the Trainer has an eval dataset).
        """
        from transformers import Trainer, TrainerCallback

        from hf_tickets.training.callback import TicketCallback

        class RoundCallback(TrainerCallback):
            def __init__(self, rnd):
                self.rnd = rnd

            def on_step_end(self, args, state, control, **kwargs):
                if self.rnd.step_completed(state.global_step):
                    control.should_training_stop = True

        for rnd in self._rounds(None, mask_gradients=False):
            trainer = build_trainer(self.model, rnd)
            self._check_trainer(trainer, rnd, Trainer)
            trainer.add_callback(TicketCallback(rnd.ticket, verify_base=self._verify_base))
            trainer.add_callback(RoundCallback(rnd))
            checkpoint = self._resumable_checkpoint(rnd)
            start = time.perf_counter()
            output = trainer.train(resume_from_checkpoint=checkpoint)
            train_time = time.perf_counter() - start
            metrics = dict(output.metrics)
            if evaluate is not None:
                metrics.update(evaluate(trainer))
            elif trainer.eval_dataset is not None:
                metrics.update(trainer.evaluate())
            rnd.finish(metrics, trainer.state.global_step, trainer.state.max_steps, train_time)
        return self.results

    @property
    def results(self) -> dict:
        """What ``results.json`` holds: config, processes, one row per finished round, the matching ticket."""
        full, full_std = self._full_score(), self.config.full_model_std
        rows = [{**row, "full_score": full, "full_std": full_std} for row in self.rows]
        return {
            "config": self.config.to_dict(),
            "schedule": self.schedule,
            "world_size": self._distributed["world_size"],
            "distributed": self._distributed,
            "rounds": rows,
            "matching": self.matching_round(),
            "complete": self.done,
            "stopped_reason": self.stopped_reason,
            "early_bird_steps_saved": sum(row.get("early_bird_steps_saved") or 0 for row in self.rows),
        }

    def matching_round(self) -> dict:
        c = self.config
        return matching_ticket(
            self.rows,
            c.matching_metric,
            self._full_score(),
            c.matching_tolerance,
            c.full_model_std,
            c.matching_greater_is_better,
        )

    # ------------------------------------------------------- start / resume
    def _start_or_resume(self) -> None:
        state_path = self.output_dir / STATE_FILE
        started = broadcast_object(state_path.is_file() if self._main else None)
        if started:
            self._check_state(read_json(state_path))
            similarity = self.round_ticket(0).base_similarity(self.model)
            if similarity is not None and similarity < FINGERPRINT_MIN_SIMILARITY:
                raise TicketError(
                    f"{self.output_dir} holds an IMP run started from other weights than this model's "
                    f"(fingerprint similarity {similarity:.2f}); pass the same model or a new output_dir"
                )
            self.theta0 = load_file(self.output_dir / THETA0_FILE)
            if (self.output_dir / REWIND_FILE).is_file():
                self._theta_rewind = load_file(self.output_dir / REWIND_FILE)
        else:
            if self._reference is not None:
                base_ticket = Ticket.from_pretrained(self._reference / "round_00" / TICKET_DIR)
                base_ticket.config.provenance.pop("metrics", None)
                self._reinitialise(base_ticket)
            else:
                base_ticket = prune(self.model, 0.0, strategy=self.config.strategy, targets=self.config.targets)
            self._annotate(base_ticket, 0)
            # A CLONE, on CPU: state_dict() tensors share storage with the parameters, so a
            # "θ0" kept by reference is trained along with the model and rewinding restores nothing.
            self.theta0 = _snapshot(self._module)
            if self._main:
                _save_weights(self.output_dir / THETA0_FILE, self.theta0)
                base_ticket.save_pretrained(self.round_dir(0) / TICKET_DIR)
                self._write_state()  # last: its presence says the run was initialised
            barrier()

        self.rows = broadcast_object(self._read_rows() if self._main else None)
        self._next_round = len(self.rows)
        if self.rows and self.config.stop_when_not_matching and not self._matches(self.rows[-1]):
            self.stopped_reason = f"round {self.rows[-1]['round']} left the matching band"
        if self.done:
            self._ticket = None
            return
        ticket_dir = self.round_dir(self._next_round) / TICKET_DIR
        if not (ticket_dir / MASKS_FILE).is_file():
            raise TicketError(
                f"{ticket_dir} is missing although round {self._next_round - 1} finished: that round was the "
                f"last of the earlier run, so its weights were not pruned. Extend runs in a new output_dir."
            )
        self._ticket = Ticket.from_pretrained(ticket_dir)
        if started and self._main:
            self._write_state()  # only once the run is known to continue with these settings
        if self.config.baseline == "standard_pruning" and self._next_round > 0:
            self._final_weights = load_file(self.round_dir(self._next_round - 1) / FINAL_WEIGHTS_FILE)
        if self._next_round:
            logger.info(
                "IMP: resuming %s at round %d (%d complete)", self.output_dir, self._next_round, self._next_round
            )

    def _check_state(self, state: Mapping) -> None:
        old, new = state.get("config", {}), self.config.to_dict()
        differing = [k for k in IDENTITY if old.get(k) != new.get(k)]
        if differing:
            what = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} here" for k in differing)
            raise TicketError(
                f"{self.output_dir} holds an IMP run with other settings ({what}); "
                "rerun with the same settings or use a new output_dir"
            )
        for r, (a, b) in enumerate(zip(state.get("schedule", []), self.schedule)):
            if abs(a - b) > 1e-12:
                raise TicketError(
                    f"the sparsity schedule differs from the run in {self.output_dir} at round {r} "
                    f"({a} there, {b} here); use a new output_dir"
                )

    def _write_state(self) -> None:
        atomic_write_json(
            self.output_dir / STATE_FILE,
            {"config": self.config.to_dict(), "schedule": self.schedule, "distributed": self._distributed},
        )

    def _read_rows(self) -> list[dict]:
        rows = []
        while (self.round_dir(len(rows)) / METRICS_FILE).is_file() and len(rows) < len(self.schedule):
            rows.append(read_json(self.round_dir(len(rows)) / METRICS_FILE))
        return rows

    def _check_reference(self) -> None:
        state_path = self._reference / STATE_FILE
        if not state_path.is_file():
            raise TicketError(f"reference_dir {self._reference} is not an IMP output_dir (no {STATE_FILE})")
        state = read_json(state_path)
        if state["config"].get("baseline") != "none":
            raise TicketError(f"reference_dir {self._reference} is a {state['config'].get('baseline')} run, not IMP")
        theirs = state["schedule"]
        if any(a != b for a, b in zip(theirs, self.schedule)):
            raise TicketError(f"reference_dir {self._reference} used the schedule {theirs}, this run {self.schedule}")
        missing = [
            r
            for r in range(len(self.schedule))
            if not (self._reference / f"round_{r:02d}" / TICKET_DIR / MASKS_FILE).is_file()
        ]
        if missing:
            raise TicketError(
                f"reference_dir {self._reference} has no ticket yet for rounds {missing}: finish that IMP run first"
            )

    def _reinitialise(self, base_ticket: Ticket) -> None:
        """random_reinit: one fixed random initialisation (seeded), the same in every round.

        The seed is offset from ``imp_seed``: a model built under ``manual_seed(imp_seed)`` (as in a
        test) would otherwise be "re-initialised" to exactly its own weights.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.imp_seed + REINIT_SEED_OFFSET)
            fresh = type(self._module)(self._module.config)
        load_full_state_dict(self._module, fresh.state_dict())
        similarity = base_ticket.base_similarity(self.model)
        if similarity is not None and similarity >= FINGERPRINT_MIN_SIMILARITY:
            raise TicketError(
                f"the random re-initialisation is still the pre-trained weights (similarity {similarity:.2f})"
            )

    # ------------------------------------------------------------- rounds
    def _rounds(self, total_steps: int | None, mask_gradients: bool) -> Iterator[IMPRound]:
        bar = tqdm(
            total=len(self.schedule), initial=self._next_round, desc="IMP rounds", unit="round", disable=not self._main
        )
        redirect = logging_redirect_tqdm()  # log lines above the bar instead of glued to it
        redirect.__enter__()
        try:
            while not self.done:
                rnd = self._begin_round(total_steps, mask_gradients)
                yield rnd
                if not rnd.finished:
                    raise TicketError(
                        f"round {rnd.index} was not finished: call round.finish(metrics) at the end of every round"
                    )
                bar.update(1)
                bar.set_postfix(sparsity=f"{rnd.sparsity:.4f}")
        finally:
            redirect.__exit__(None, None, None)
            bar.close()
            if self._round is not None:
                _remove_hooks(self._round)
                self._round = None

    def _begin_round(self, total_steps: int | None, mask_gradients: bool) -> IMPRound:
        r, config = self._next_round, self.config
        if r > 0 and config.baseline == "standard_pruning":
            start = self._final_weights  # the previous round's trained weights: no rewind
        elif r > 0 and config.rewind == "step":
            start = self._theta_rewind
            if start is None:
                raise TicketError(
                    f"no θ_{config.rewind_steps} to rewind to: round 0 never reached step {config.rewind_steps}"
                )
        else:
            start = self.theta0  # every weight, the task head's initial random init included
        with torch.no_grad():
            load_full_state_dict(self._module, start)  # sharded models: each rank into its shard
        self._ticket.apply(self.model, verify_base=self._verify_base)
        from transformers import set_seed

        set_seed(config.imp_seed)  # same data order and dropout whether this round runs first or after a resume
        rnd = IMPRound(self, r, self._ticket, total_steps)
        params = self._ticket.parameters_of(self.model)
        rnd._keep = [(local_view(p), local_mask(self._ticket.masks[n], p).to(torch.uint8)) for n, p in params.items()]
        if mask_gradients and self._ticket.num_pruned:
            # As in TicketCallback: sharded parameters get their gradients from FSDP/DeepSpeed, not
            # from autograd accumulation, so only whole ones are hooked; all are re-zeroed after steps.
            rnd._hooks = [
                p.register_post_accumulate_grad_hook(_grad_masker(keep))
                for (_, keep), p in zip(rnd._keep, params.values())
                if not is_dtensor(p)
            ]
        self._round = rnd
        return rnd

    def _next_ticket(self, ticket: Ticket, sparsity: float, index: int) -> Ticket:
        """The ticket of round ``index + 1``: pruned from the weights the model holds now (IMP)."""
        baseline = self.config.baseline
        if baseline == "random_reinit":
            new = Ticket.from_pretrained(self._reference / f"round_{index + 1:02d}" / TICKET_DIR)
            if abs(new.sparsity - sparsity) > 1.0 / new.num_weights + 1e-12:
                raise TicketError(
                    f"reference ticket of round {index + 1} has sparsity {new.sparsity}, the schedule {sparsity}"
                )
            new.config.provenance.pop("metrics", None)  # the reference's scores, not this run's
        elif baseline == "random_pruning":
            new = prune(self.model, sparsity, strategy="random", ticket=ticket, seed=self.config.imp_seed)
        else:  # IMP and standard pruning: global magnitude of the trained weights, on every rank
            new = prune(self.model, sparsity, strategy=self.config.strategy, ticket=ticket)
        return self._annotate(new, index + 1)

    def _annotate(self, ticket: Ticket, index: int) -> Ticket:
        c = self.config
        ticket.config.provenance.update(
            method="imp",
            imp_round=index,
            baseline=None if c.baseline == "none" else c.baseline,
            rewind=c.rewind if c.rewind == "init" else f"step {c.rewind_steps}",
            schedule=c.sparsity_schedule or f"prune_fraction {c.prune_fraction}",
        )
        return ticket

    def _finish(self, rnd: IMPRound, metrics: dict, train_steps, planned_steps, train_time_s) -> None:
        if rnd.finished or rnd is not self._round:
            raise TicketError(f"round {rnd.index} is not the round in progress (finished twice?)")
        train_time = train_time_s if train_time_s is not None else time.perf_counter() - rnd._start
        _remove_hooks(rnd)
        metrics = broadcast_object(metrics)  # the main process's numbers are the record, on every rank
        self._check_masked(rnd)
        if rnd.index == 0 and self.config.rewind == "step" and self._theta_rewind is None:
            raise TicketError(f"round 0 ended after {rnd.steps} steps, before rewind_steps={self.config.rewind_steps}")
        steps = rnd.steps if train_steps is None else int(train_steps)
        planned = planned_steps if planned_steps is not None else rnd.planned_steps
        saved = max(planned - steps, 0) if rnd.should_stop and planned else 0
        row = make_row(
            rnd.index,
            rnd.sparsity,
            None if self.config.baseline == "none" else self.config.baseline,
            metrics,
            train_time_s=round(train_time, 3),
            train_steps=steps,
            planned_steps=planned,
            early_bird_stopped=rnd.should_stop,
            early_bird_steps_saved=saved,
            ticket=str(Path(rnd.output_dir.name) / TICKET_DIR),
        )
        stop = rnd.index > 0 and self.config.stop_when_not_matching and not self._matches(row)
        self.rows.append(row)
        next_ticket = None
        if not rnd.is_last and not stop:
            next_ticket = self._next_ticket(rnd.ticket, rnd.next_sparsity, rnd.index)
            if self.config.baseline == "standard_pruning":
                self._final_weights = _snapshot(self._module)
                if self._main:
                    _save_weights(rnd.output_dir / FINAL_WEIGHTS_FILE, self._final_weights)
            if self._main:
                next_ticket.save_pretrained(self.round_dir(rnd.index + 1) / TICKET_DIR)
        if self._main:
            rnd.ticket.config.provenance["metrics"] = {k: v for k, v in row.items() if k in metrics}
            rnd.ticket.save_pretrained(rnd.output_dir / TICKET_DIR)
            atomic_write_json(rnd.output_dir / METRICS_FILE, row)  # last: the round is complete
        rnd.finished, self._round, self._ticket = True, None, next_ticket
        self._next_round += 1
        if stop:
            self.stopped_reason = f"round {rnd.index} left the matching band"
        if self._main:
            write_results(self.output_dir, self.results)
        barrier()
        self._log_round(row)

    def _check_masked(self, rnd: IMPRound) -> None:
        params = rnd.ticket.parameters_of(self.model)
        with torch.no_grad():
            alive = sum(
                int(torch.count_nonzero(full_weight(params[n])[~m.to(params[n].device)]))
                for n, m in rnd.ticket.masks.items()
            )
        if alive:
            raise TicketError(
                f"round {rnd.index}: {alive} pruned weights are nonzero at the end of training, so the scores are "
                f"not the ticket's. Call manager.apply_masks() after every optimizer.step()."
            )

    def _capture_rewind(self) -> None:
        self._theta_rewind = _snapshot(self._module)
        if self._main:
            _save_weights(self.output_dir / REWIND_FILE, self._theta_rewind)

    def _full_score(self) -> float | None:
        metric = self.config.matching_metric
        if self._reference is not None:  # random re-init's round 0 is not the pre-trained full model
            path = self._reference / "round_00" / METRICS_FILE
            return read_json(path).get(metric) if path.is_file() else None
        return self.rows[0].get(metric) if self.rows else None

    def _matches(self, row: Mapping) -> bool:
        c, full = self.config, self._full_score()
        score = row.get(c.matching_metric)
        if full is None or score is None:
            raise TicketError(
                f"stop_when_not_matching needs {c.matching_metric!r} in the metrics of round 0 and of round "
                f"{row['round']}; round {row['round']} reported {sorted(k for k in row if k.startswith('eval'))}"
            )
        tolerance, _ = resolve_tolerance(full, c.matching_tolerance, c.full_model_std)
        return within_band(score, full, tolerance, greater_is_better(c.matching_metric, c.matching_greater_is_better))

    def _log_round(self, row: Mapping) -> None:
        scores = ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k in self._metric_names(row) and isinstance(v, (int, float))
        )
        eb = f", early-bird saved {row['early_bird_steps_saved']} steps" if row["early_bird_stopped"] else ""
        logger.info(
            "IMP round %d/%d | sparsity %.4f | %s | %d steps in %.1f s%s",
            row["round"],
            len(self.schedule) - 1,
            row["sparsity"],
            scores or "no metrics",
            row["train_steps"],
            row["train_time_s"],
            eb,
        )

    @staticmethod
    def _metric_names(row: Mapping) -> list[str]:
        return [k for k in metric_keys([row]) if not k.endswith(("_runtime", "_per_second"))]

    def _require_round(self) -> IMPRound:
        if self._round is None:
            raise TicketError("no IMP round in progress: iterate `for rnd in manager.rounds():` first")
        return self._round

    # ------------------------------------------------------------- Trainer
    def _check_trainer(self, trainer, rnd: IMPRound, trainer_cls) -> None:
        if not isinstance(trainer, trainer_cls):
            raise TicketError(f"build_trainer must return a transformers.Trainer, got {type(trainer).__name__}")
        if trainer in self._trainers:
            raise TicketError(
                "build_trainer returned the Trainer of an earlier round: build a new one every round, "
                "else its optimizer state and (decayed) learning-rate schedule carry over"
            )
        self._trainers.add(trainer)
        if unwrap_model(trainer.model) is not self._module:
            raise TicketError("build_trainer must build the Trainer on the model it is given (the manager's model)")
        if Path(trainer.args.output_dir).resolve() != rnd.checkpoint_dir.resolve():
            raise TicketError(
                f"the round's Trainer must save under round.checkpoint_dir ({rnd.checkpoint_dir}), "
                f"not {trainer.args.output_dir}: resuming looks for its checkpoints there"
            )

    def _resumable_checkpoint(self, rnd: IMPRound) -> str | None:
        """The round's newest complete checkpoint (Trainer files and ticket); incomplete ones are removed."""
        found = None
        if self._main and rnd.checkpoint_dir.is_dir():
            steps = sorted(
                (int(p.name.split("-")[-1]), p)
                for p in rnd.checkpoint_dir.glob("checkpoint-*")
                if p.name.split("-")[-1].isdigit()
            )
            for _, path in reversed(steps):
                complete = all((path / f).is_file() for f in ("trainer_state.json", MASKS_FILE, CONFIG_FILE))
                if complete and found is None:
                    found = path
                elif not complete:
                    logger.warning("IMP round %d: removing incomplete checkpoint %s", rnd.index, path)
                    shutil.rmtree(path, ignore_errors=True)
            if found is not None and not Ticket.from_pretrained(found).equals(rnd.ticket):
                raise TicketError(f"{found} holds another ticket than round {rnd.index}'s: it is not from this run")
        found = broadcast_object(str(found) if found is not None else None)
        if found is not None:
            logger.info("IMP round %d: resuming from %s", rnd.index, found)
        return found


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight and persistent buffer, whole (gathered if sharded: collective), copied to CPU.

    ``copy=True``: never a view of the live tensor, which training would change.
    """
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in full_state_dict(module).items()}


def _save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def _grad_masker(keep: torch.Tensor):
    def hook(param: torch.Tensor) -> None:
        param.grad.mul_(keep)  # gradient clipping then sees only the sub-network

    return hook


def _remove_hooks(rnd: IMPRound) -> None:
    for hook in rnd._hooks:
        hook.remove()
    rnd._hooks = []
