"""IMP: iterative magnitude pruning (the paper's Algorithm 1), resumable, with its baselines.

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

A structured strategy with ``unit_score="importance"`` ranks heads and neurons by their importance on
data (``hf_tickets.training.importance``): pass training batches, ``rnd.finish(metrics, batches=loader)``.

Trainer: ``manager.run_with_trainer(lambda model, rnd: Trainer(model, TrainingArguments(
output_dir=str(rnd.checkpoint_dir), ...), ...))`` builds one Trainer per round (so the LR schedule
restarts) and adds ``TicketCallback(rnd.ticket)``; an interrupted round resumes from its last checkpoint.

Files under ``output_dir``: see ``run_state`` (a round is complete iff its ``metrics.json`` exists;
``results.json``/``.csv`` are rebuilt from the rounds at every start). A run holds an exclusive
lock on ``output_dir``, and every setting that changes what a round computes is recorded: a second
live run, or a resume with other settings (``IMPConfig``, ``run_identity=``, the Trainer's
arguments and datasets), is an error naming the holder or the setting. Rerunning the same command
skips complete rounds and redoes the interrupted one from its start (or from its last Trainer
checkpoint); rounds are seeded (``imp_seed``) at their start, so a resumed run ends with the same
masks as an uninterrupted one, provided the loop draws its randomness after the round starts: build
the optimizer and the data loader inside the round (a loader that ``accelerator.prepare`` shuffles
across processes gets its generator seeded when it is prepared).
"""

from hf_tickets.training.imp.manager import IMPManager
from hf_tickets.training.imp.rounds import IMPRound
from hf_tickets.training.imp_config import IMPConfig

__all__ = ["IMPConfig", "IMPManager", "IMPRound"]
