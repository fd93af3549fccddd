"""``TicketCallback``: train a ticket (a masked sub-network) with the stock Hugging Face ``Trainer``.

``Trainer(..., callbacks=[TicketCallback(ticket)])`` is all it takes; the Trainer is never subclassed
or patched. The callback

- applies the ticket at train begin (after the Trainer has loaded a resumed checkpoint);
- keeps pruned weights exactly zero: their gradients are zeroed as they are accumulated, so
  gradient clipping and the logged ``grad_norm`` see only the sub-network (as with the paper's
  ``weight_orig * mask`` parametrisation), and the weights are re-zeroed after every optimizer step,
  so no optimizer (weight decay, momentum, loaded optimizer state) can revive a pruned weight;
- writes the ticket into every ``checkpoint-N`` and, on resume, continues with the checkpoint's ticket;
- adds ``sparsity`` (measured on the model) to the Trainer's logs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_tickets.core.errors import TicketError
from hf_tickets.core.shards import local_mask, local_view
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket
from hf_tickets.training.masking import Masking

logger = logging.getLogger(__name__)


class TicketCallback(TrainerCallback):
    """Train only the weights ``ticket`` keeps; pruned weights stay exactly zero.

    ``verify_base=False`` skips the check that the model's weights are the ticket's base (e.g. to
    train a ticket's mask from a random re-initialisation). ``mask_gradients=False`` only re-zeroes
    weights after each optimizer step: pruned weights still end exactly zero, but their gradients
    then count in gradient clipping and in the logged ``grad_norm``.
    """

    def __init__(self, ticket: Ticket, verify_base: bool = True, mask_gradients: bool = True):
        if not isinstance(ticket, Ticket):
            raise TicketError(f"TicketCallback needs a Ticket, got {type(ticket).__name__}")
        self.ticket = ticket  # replaced by the checkpoint's ticket when training resumes
        self.verify_base = verify_base
        self.mask_gradients = mask_gradients
        self._masking: Masking | None = None  # built at train begin, on the model the Trainer trains

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise TicketError("TicketCallback needs the model: the Trainer passes it to callbacks as `model`")
        # A fresh TrainerState starts at step 0; a resumed one was loaded from the checkpoint's
        # trainer_state.json, and the checkpoint's weights are already in the model.
        if state.global_step > 0:
            self._adopt_checkpoint_ticket(args, state, model)
        report = self.ticket.apply(model, verify_base=self.verify_base)
        self._remove_hooks()
        self._masking = Masking(self.ticket, model, mask_gradients=self.mask_gradients)
        logger.info(
            "TicketCallback: training %d of %d target weights (sparsity %.4f) in %d tensors",
            report.weights - report.pruned,
            report.weights,
            report.sparsity,
            report.tensors,
        )

    def on_optimizer_step(self, args, state, control, **kwargs):
        # Called right after optimizer.step() (before the scheduler step and the next forward), once
        # per optimizer step whatever gradient_accumulation_steps is: the earliest point at which an
        # update can have touched a pruned weight. x * 0 is exactly (+/-) 0 for every finite x.
        self._masking.zero_()

    def on_train_end(self, args, state, control, **kwargs):
        self._remove_hooks()  # weights stay masked; later evaluation may still log sparsity

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save or self._masking is None:  # the process that writes checkpoints
            return
        # Trainer._save_checkpoint has written this folder (same name, PREFIX_CHECKPOINT_DIR-global_step)
        # before it calls on_save.
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not folder.is_dir():  # e.g. hyperparameter search, which saves under output_dir/run-*
            logger.warning("TicketCallback: no checkpoint folder %s; the ticket was not saved with it", folder)
            return
        self.ticket.save_pretrained(folder)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self._masking is None:
            return
        sparsity = self.measured_sparsity()
        logs["sparsity"] = sparsity  # seen by the callbacks after this one (progress bar/printer)
        # Trainer.log has already appended a copy ({**logs, "step": global_step}) to log_history.
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and logs.keys() - {"sparsity"} <= last.keys():
            last["sparsity"] = sparsity

    # ----------------------------------------------------------------- helpers
    def measured_sparsity(self) -> float:
        """Fraction of the ticket's target weights that is exactly zero in the model now.

        Sharded weights are counted on the shard this process holds (no communication).
        """
        if self._masking is None:
            raise TicketError("TicketCallback has not been applied yet (it is applied at train begin)")
        return self._masking.measured_sparsity()

    def _remove_hooks(self) -> None:
        if self._masking is not None:
            self._masking.remove()

    def _adopt_checkpoint_ticket(self, args, state, model) -> None:
        """On resume, continue with the ticket saved in the checkpoint (it is what the weights were trained with).

        Callbacks are not told which checkpoint ``Trainer.train(resume_from_checkpoint=...)`` loaded, so
        look where it can be: ``args.resume_from_checkpoint`` (which scripts pass to ``train``), then
        ``output_dir/checkpoint-<global_step>`` (what ``resume_from_checkpoint=True`` picks).
        """
        candidates = [Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"]
        if isinstance(args.resume_from_checkpoint, (str, os.PathLike)):
            candidates.insert(0, Path(args.resume_from_checkpoint))
        folder = next((c for c in candidates if (c / MASKS_FILE).is_file() and (c / CONFIG_FILE).is_file()), None)
        if folder is None:
            logger.warning(
                "TicketCallback: resuming at step %d, but no ticket in %s; applying the ticket passed to the callback",
                state.global_step,
                " or ".join(map(str, dict.fromkeys(candidates))),
            )
            return
        ticket = Ticket.from_pretrained(folder)
        # The weights saved with that ticket are exactly zero where it prunes; if the loaded weights
        # are not, this folder is not the checkpoint the Trainer resumed from.
        with torch.no_grad():
            alive = sum(
                int(torch.count_nonzero(local_view(p).detach()[~local_mask(ticket.masks[n], p)]))
                for n, p in ticket.parameters_of(model).items()
            )
        if alive:
            raise TicketError(
                f"the ticket in {folder} prunes {alive} weights that are nonzero in the resumed model: it was not "
                f"saved with the checkpoint being resumed. Fix args.resume_from_checkpoint/output_dir."
            )
        if not ticket.equals(self.ticket):
            logger.warning(
                "TicketCallback: resuming with the ticket saved in %s (sparsity %.4f), not the one passed to the "
                "callback (sparsity %.4f)",
                folder,
                ticket.sparsity,
                self.ticket.sparsity,
            )
        else:
            logger.info("TicketCallback: resuming with the ticket saved in %s", folder)
        self.ticket = ticket
