"""``IMPManager``: the IMP loop (start or resume, rewind, prune, record), for a plain loop or the Trainer.

See ``hf_tickets.training.imp`` for the algorithm and the usage; ``run_state`` for the files,
the lock and the run's identity; ``rounds`` for ``IMPRound``; ``trainer_glue`` for the Trainer.
Several processes: the collective steps (gathering sharded weights, pruning) run on every rank;
what only the main process does (files) goes through ``on_main``, so a failure there stops every
rank at once with the same error.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import set_seed

from hf_tickets.core.collectives import broadcast_object, is_main_process, on_main
from hf_tickets.core.errors import TicketError
from hf_tickets.core.pruning import mask_distance, prune
from hf_tickets.core.shards import full_state_dict, full_weight, load_full_state_dict
from hf_tickets.core.structured import STRUCTURED_STRATEGIES
from hf_tickets.core.targets import unwrap_model
from hf_tickets.core.ticket import FINGERPRINT_MIN_SIMILARITY, MASKS_FILE, Ticket
from hf_tickets.training.imp.rounds import IMPRound
from hf_tickets.training.imp.run_state import (
    FINAL_WEIGHTS_FILE,
    REWIND_FILE,
    THETA0_FILE,
    TICKET_DIR,
    OutputDirLock,
    RunFolder,
    check_identity,
    check_reference,
    check_schedule,
    plain,
)
from hf_tickets.training.imp.summary import RunSummary
from hf_tickets.training.imp.trainer_glue import run_with_trainer
from hf_tickets.training.imp_config import DEFAULT_MATCHING_METRIC, IMPConfig
from hf_tickets.training.importance import unit_importance
from hf_tickets.training.launch import distributed_info
from hf_tickets.training.masking import Masking
from hf_tickets.training.results import make_row

logger = logging.getLogger(__name__)

REINIT_SEED_OFFSET = 1_000_003


class IMPManager:
    """Run IMP on ``model`` (θ0 = its weights now, head included) into ``output_dir``.

    ``run_identity``: your own settings that change what a round computes (learning rate, data...):
    resuming with other values is then an error naming them, as for the config's settings.
    """

    def __init__(
        self,
        model: nn.Module,
        config: IMPConfig | None = None,
        output_dir: str = "imp_output",
        run_identity: Mapping[str, Any] | None = None,
    ):
        self.config = config if config is not None else IMPConfig()
        if not isinstance(self.config, IMPConfig):
            raise TicketError(f"config must be an IMPConfig, got {type(self.config).__name__}")
        if self.config.matching_metric is None:  # the recipes fill in the task's metric; a plain loop gets this
            self.config = dataclasses.replace(self.config, matching_metric=DEFAULT_MATCHING_METRIC)
        if run_identity is not None and not isinstance(run_identity, Mapping):
            raise TicketError(f"run_identity must be a mapping of setting names to values, got {run_identity!r}")
        self.model, self._module = model, unwrap_model(model)  # never prune through a DDP/compile wrapper
        self.output_dir = Path(output_dir)
        self.folder = RunFolder(self.output_dir)
        self.schedule = self.config.schedule()
        self.verify_base = self.config.baseline in ("none", "random_pruning")
        self._reference = Path(self.config.reference_dir) if self.config.reference_dir else None
        self._distributed = distributed_info()
        self._round: IMPRound | None = None
        self._theta_rewind: dict[str, torch.Tensor] | None = None
        self._final_weights: dict[str, torch.Tensor] | None = None  # standard pruning: next round's start
        self._identity = {
            "config": self.config.identity(),
            "run_identity": plain(dict(run_identity or {})),
        }
        self.stopped_reason: str | None = None
        self.summary = RunSummary(self.config, self.schedule, self._distributed, self._reference)
        self._lock = OutputDirLock(self.output_dir)
        weakref.finalize(self, self._lock.release)  # a manager dropped before its rounds ended
        on_main(self._lock.acquire)
        try:
            if self._reference is not None:
                on_main(lambda: check_reference(self._reference, self.schedule))
            self._start_or_resume()
        except BaseException:
            self.close()
            raise
        if self.done:  # nothing to train: the folder is only read from now on
            self.close()

    # ------------------------------------------------------------ public API
    def round_dir(self, index: int) -> Path:
        return self.folder.round_dir(index)

    def round_ticket(self, index: int) -> Ticket:
        return Ticket.from_pretrained(self.folder.ticket_dir(index))

    @property
    def done(self) -> bool:
        return self.stopped_reason is not None or self._next_round >= len(self.schedule)

    @property
    def current_round(self) -> IMPRound | None:
        return self._round

    def rounds(self, total_steps: int | None = None, mask_gradients: bool = True) -> Iterator[IMPRound]:
        """Yields each remaining round with the model rewound and masked.

        ``total_steps`` (optimizer steps a round would take) only serves to report early-bird savings.
        ``mask_gradients=False``: the caller keeps the weights masked (the Trainer path's TicketCallback).
        """
        bar = tqdm(
            total=len(self.schedule),
            initial=self._next_round,
            desc="IMP rounds",
            unit="round",
            disable=not is_main_process(),
        )
        redirect = logging_redirect_tqdm()  # log lines above the bar instead of glued to it
        redirect.__enter__()
        try:
            on_main(self._lock.acquire)  # again if an earlier iteration released it
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
            if self._round is not None and self._round.masking is not None:
                self._round.masking.remove()
            self._round = None
            self.close()

    def apply_masks(self) -> None:
        """Re-zero the pruned weights (also DeepSpeed's fp32 master copy); call after every ``optimizer.step()``."""
        rnd = self._require_round()
        if rnd.masking is None:
            raise TicketError("apply_masks() is for the plain loop: under run_with_trainer the callback masks")
        rnd.masking.zero_()
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
        return run_with_trainer(self, build_trainer, evaluate)

    def pin_identity(self, section: str, settings: Mapping[str, Any]) -> None:
        """Make ``settings`` part of the run's identity, or check them against those the run recorded.

        The main process's settings decide (ranks may differ in e.g. their device); all ranks raise on a mismatch.
        """
        settings = plain(dict(settings))

        def pin() -> None:
            if section in self._identity:
                check_identity(self.output_dir, {section: self._identity[section]}, {section: settings})
            else:
                self._identity[section] = settings
                self._write_state()

        on_main(pin)

    def close(self) -> None:
        """Release the lock on output_dir (done when the rounds end; the files stay readable).

        Not a collective: it also runs when one rank alone leaves the rounds with an error.
        """
        if is_main_process():
            self._lock.release()

    @property
    def results(self) -> dict:
        """What ``results.json`` holds: config, processes, one row per finished round, the matching round."""
        return self.summary.results(self.done, self.stopped_reason)

    @property
    def rows(self) -> list[dict]:
        """The records of the finished rounds, round 0 first."""
        return self.summary.rows

    def matching_round(self) -> dict:
        return self.summary.matching_round()

    # ------------------------------------------------------- start / resume
    def _start_or_resume(self) -> None:
        folder = self.folder
        state = on_main(lambda: folder.read_state() if folder.is_initialised() else None)
        if state is not None:
            # Runs from before the identity was recorded: their config holds the same settings.
            legacy = {k: state["config"].get(k) for k in self._identity["config"]}
            recorded = state.get("identity") or {"config": legacy}
            check_identity(self.output_dir, recorded, self._identity)
            check_schedule(self.output_dir, state.get("schedule", []), self.schedule)
            self._identity = {**recorded, **self._identity}
            similarity = self.round_ticket(0).base_similarity(self.model)
            if similarity is not None and similarity < FINGERPRINT_MIN_SIMILARITY:
                raise TicketError(
                    f"{self.output_dir} holds an IMP run started from other weights than this model's "
                    f"(fingerprint similarity {similarity:.2f}); pass the same model or a new output_dir"
                )
            self.theta0 = folder.load_weights(THETA0_FILE)
            if self.theta0 is None:
                raise TicketError(f"{self.output_dir / THETA0_FILE} is missing: the run's θ0 is lost")
            self._theta_rewind = folder.load_weights(REWIND_FILE)
        else:
            if self._reference is not None:
                base_ticket = Ticket.from_pretrained(RunFolder(self._reference).ticket_dir(0))
                base_ticket.config.provenance.pop("metrics", None)
                self._reinitialise(base_ticket)
            else:
                base_ticket = prune(self.model, 0.0, strategy=self.config.strategy, targets=self.config.targets)
            self._annotate(base_ticket, 0)
            # A CLONE, on CPU: state_dict() tensors share storage with the parameters, so a
            # "θ0" kept by reference is trained along with the model and rewinding restores nothing.
            self.theta0 = _snapshot(self._module)

            def initialise() -> None:
                folder.save_weights(THETA0_FILE, self.theta0)
                base_ticket.save_pretrained(folder.ticket_dir(0))
                self._write_state()  # last: its presence says the run was initialised

            on_main(initialise)

        self.summary.rows = on_main(lambda: folder.read_rows(len(self.schedule)))
        self._next_round = len(self.rows)
        if self.rows and self.config.stop_when_not_matching and not self.summary.matches(self.rows[-1]):
            self.stopped_reason = f"round {self.rows[-1]['round']} left the matching band"
        self._ticket = None
        if not self.done:
            ticket_dir = folder.ticket_dir(self._next_round)
            if not (ticket_dir / MASKS_FILE).is_file():
                raise TicketError(
                    f"{ticket_dir} is missing although round {self._next_round - 1} finished: that round was the "
                    f"last of the earlier run, so its weights were not pruned. Extend runs in a new output_dir."
                )
            self._ticket = Ticket.from_pretrained(ticket_dir)
            if self.config.baseline == "standard_pruning" and self._next_round > 0:
                self._final_weights = folder.load_weights(FINAL_WEIGHTS_FILE, self._next_round - 1)
        # The summary is rebuilt from the round folders, whatever an earlier kill left of it; the state
        # is rewritten only now that the run is known to continue with these settings.
        on_main(lambda: (self._write_state(), folder.write_summary(self.results)))
        if self._next_round and not self.done:
            logger.info("IMP: resuming %s at round %d (%d complete)", self.output_dir, self._next_round, len(self.rows))

    def _write_state(self) -> None:
        self.folder.write_state(
            {
                "config": self.config.to_dict(),
                "schedule": self.schedule,
                "distributed": self._distributed,
                "identity": self._identity,
            }
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
        self._ticket.apply(self.model, verify_base=self.verify_base)
        set_seed(config.imp_seed)  # same data order and dropout whether this round runs first or after a resume
        self._round = IMPRound(
            r,
            self._ticket,
            self.schedule[r + 1] if r + 1 < len(self.schedule) else None,
            self.round_dir(r),
            config,
            Masking(self._ticket, self.model) if mask_gradients else None,
            total_steps,
            on_finish=self._finish,
            on_rewind_step=self._capture_rewind,
            candidate_ticket=lambda rnd: self._next_ticket(rnd.ticket, rnd.next_sparsity, rnd.index),
            mask_distance=lambda rnd, old, new: mask_distance(self.model, config.strategy, old, new, rnd.ticket),
        )
        self._round.begin()
        return self._round

    def _next_ticket(self, ticket: Ticket, sparsity: float, index: int, batches: Iterable | None = None) -> Ticket:
        """The ticket of round ``index + 1``: pruned from the weights the model holds now (IMP).

        With ``unit_score="importance"``, ranked by the units' importance on ``batches`` instead of their magnitude.
        """
        baseline = self.config.baseline
        if baseline == "random_reinit":
            new = Ticket.from_pretrained(RunFolder(self._reference).ticket_dir(index + 1))
            if abs(new.sparsity - sparsity) > 1.0 / new.num_weights + 1e-12:
                raise TicketError(
                    f"reference ticket of round {index + 1} has sparsity {new.sparsity}, the schedule {sparsity}"
                )
            new.config.provenance.pop("metrics", None)  # the reference's scores, not this run's
        elif baseline == "random_pruning":
            new = prune(self.model, sparsity, strategy="random", ticket=ticket, seed=self.config.imp_seed)
        else:  # IMP and standard pruning: the strategy's ranking of the trained weights, on every rank
            scores = None
            if self.config.unit_score == "importance":
                kinds = STRUCTURED_STRATEGIES[self.config.strategy][0]
                used = itertools.islice(batches, self.config.importance_batches)
                scores = unit_importance(self.model, used, targets=ticket.config.targets, kinds=kinds)
            new = prune(self.model, sparsity, strategy=self.config.strategy, ticket=ticket, scores=scores)
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
        if c.unit_score == "importance":  # magnitude is what every strategy means without it
            ticket.config.provenance["unit_score"] = f"importance ({c.importance_batches} batches)"
        return ticket

    def _finish(self, rnd: IMPRound, metrics: dict, train_steps, planned_steps, train_time_s, batches) -> None:
        if rnd.finished or rnd is not self._round:
            raise TicketError(f"round {rnd.index} is not the round in progress (finished twice?)")
        importance = self.config.unit_score == "importance"
        if importance and batches is None and not rnd.is_last:
            raise TicketError(
                f"unit_score='importance' scores the units on data: pass round.finish(metrics, batches=...) "
                f"(training batches with labels; the first {self.config.importance_batches} are used)"
            )
        if batches is not None and not importance:
            raise TicketError("round.finish(batches=) is for unit_score='importance'; this run scores by magnitude")
        train_time = train_time_s if train_time_s is not None else time.perf_counter() - rnd.started_at
        if rnd.masking is not None:
            rnd.masking.remove()
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
            early_bird_distances=rnd.early_bird_distances,
            early_bird_start_distance=rnd.early_bird_start_distance,
            ticket=str(Path(rnd.output_dir.name) / TICKET_DIR),
        )
        stop = rnd.index > 0 and self.config.stop_when_not_matching and not self.summary.matches(row)
        next_ticket = None
        if not rnd.is_last and not stop:
            next_ticket = self._next_ticket(rnd.ticket, rnd.next_sparsity, rnd.index, batches)  # collective if sharded
            if self.config.baseline == "standard_pruning":
                self._final_weights = _snapshot(self._module)

        def save() -> None:
            if next_ticket is not None:
                if self._final_weights is not None and self.config.baseline == "standard_pruning":
                    self.folder.save_weights(FINAL_WEIGHTS_FILE, self._final_weights, rnd.index)
                next_ticket.save_pretrained(self.folder.ticket_dir(rnd.index + 1))
            rnd.ticket.config.provenance["metrics"] = {k: v for k, v in row.items() if k in metrics}
            rnd.ticket.save_pretrained(self.folder.ticket_dir(rnd.index))
            self.folder.write_round(rnd.index, row)  # last: the round is complete

        on_main(save)
        self.rows.append(row)
        rnd.finished, self._round, self._ticket = True, None, next_ticket
        self._next_round += 1
        if stop:
            self.stopped_reason = f"round {rnd.index} left the matching band"
        on_main(lambda: self.folder.write_summary(self.results))
        self.summary.log_round(row)

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
        on_main(lambda: self.folder.save_weights(REWIND_FILE, self._theta_rewind))

    def _require_round(self) -> IMPRound:
        if self._round is None:
            raise TicketError("no IMP round in progress: iterate `for rnd in manager.rounds():` first")
        return self._round


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight and persistent buffer, whole (gathered if sharded: collective), copied to CPU.

    ``copy=True``: never a view of the live tensor, which training would change.
    """
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in full_state_dict(module).items()}
