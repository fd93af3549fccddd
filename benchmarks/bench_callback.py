"""What does ``TicketCallback`` cost per training step? Same training with and without it, one run.

A small BERT (hidden 256, 4 layers, vocab 30522, seq len 64, batch 16, random data, no download),
pruned to 50%, trained with the stock ``Trainer`` (AdamW, weight decay, clipping) for the same steps
with and without ``TicketCallback``. Runs alternate (ABBA...) so drift on a noisy machine hits both
sides alike; per-step times (on_step_begin -> on_step_end: forward, backward with the gradient hooks,
clipping, optimizer step, re-zeroing) give one median per run; runs are compared by their median and
by the fastest run of each side (other load on the machine only ever adds time, and it comes and
goes for whole runs, so the fastest run is the steadier figure). Target: overhead <= 3%.

Runs of whole trainings differ by several percent when other processes share the 2 cores, so the
callback's hot path is also timed paired: a plain loop (forward, backward, clipping, AdamW step)
alternating step by step with and without the callback's gradient hooks and re-zeroing, driven
through the callback's own events. Last, one masking pass alone: ``mul_`` by uint8 keep-masks (what
the callback does, twice per step: gradients and weights) against ``masked_fill_`` with bool masks.

Run: python benchmarks/bench_callback.py [--steps 12] [--rounds 2] [--paired-steps 30]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import tempfile
import time

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, TrainerControl, TrainerState
from transformers.utils import logging as hf_logging

import hf_tickets
from hf_tickets.training.callback import TicketCallback

SEQ_LEN, BATCH = 64, 16


class RandomBatches(torch.utils.data.Dataset):
    def __init__(self, n: int, vocab_size: int):
        g = torch.Generator().manual_seed(0)
        self.input_ids = torch.randint(0, vocab_size, (n, SEQ_LEN), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        ids = self.input_ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def train(base, ticket, with_callback: bool, steps: int, output_dir: str) -> list[float]:
    model = copy.deepcopy(base)
    timer = StepTimer()
    callbacks = [timer]
    if with_callback:
        callbacks.insert(0, TicketCallback(ticket))
    else:
        ticket.apply(model)  # same weights at the start; only the enforcement differs
    args = TrainingArguments(
        output_dir=output_dir,
        use_cpu=True,
        report_to=[],
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-4,
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=10,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=RandomBatches(steps * BATCH, base.config.vocab_size), callbacks=callbacks
    )
    trainer.remove_callback(PrinterCallback)  # keep the benchmark's output to its figures
    trainer.train()
    if with_callback:  # the run must actually have enforced the ticket
        params = ticket.parameters_of(model)
        assert all(int(torch.count_nonzero(params[n].detach()[~m])) == 0 for n, m in ticket.masks.items())
    return timer.times[2:]  # first steps: allocator and thread warm-up


def paired_step_times(base, ticket, steps: int, output_dir: str) -> dict[bool, list[float]]:
    model = copy.deepcopy(base).train()
    callback = TicketCallback(ticket)
    args = TrainingArguments(output_dir=output_dir, use_cpu=True, report_to=[])
    state, control = TrainerState(), TrainerControl()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    data = RandomBatches(BATCH, base.config.vocab_size)
    batch = {k: torch.stack([data[i][k] for i in range(BATCH)]) for k in ("input_ids", "attention_mask", "labels")}

    def step(with_callback: bool) -> float:
        if with_callback:
            callback.on_train_begin(args, state, control, model=model)  # registers the hooks (untimed)
        start = time.perf_counter()
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if with_callback:
            callback.on_optimizer_step(args, state, control)
        optimizer.zero_grad()
        elapsed = time.perf_counter() - start
        if with_callback:
            callback.on_train_end(args, state, control)
        return elapsed

    for _ in range(3):
        step(True), step(False)
    times = {False: [], True: []}
    for i in range(steps):
        for with_callback in (i % 2 == 0, i % 2 == 1):
            times[with_callback].append(step(with_callback))
    return times


def enforcement_pass_ms(base, ticket, repeats: int = 20) -> tuple[float, float]:
    model = copy.deepcopy(base)
    params = ticket.parameters_of(model)
    keep_u8 = [(p, ticket.masks[n].to(torch.uint8)) for n, p in params.items()]
    drop = [(p, ~ticket.masks[n]) for n, p in params.items()]

    def best(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * min(times)

    with torch.no_grad():
        mul = best(lambda: [p.mul_(k) for p, k in keep_u8])
        fill = best(lambda: [p.masked_fill_(d, 0) for p, d in drop])
    return mul, fill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per training run")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds: 2 runs with and 2 without per round")
    parser.add_argument("--paired-steps", type=int, default=30, help="steps per side, alternating step by step")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")

    torch.manual_seed(0)
    config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    base = BertForSequenceClassification(config)
    ticket = hf_tickets.prune(base, 0.5)
    print(f"model: {sum(p.numel() for p in base.parameters()) / 1e6:.1f}M parameters; ticket: {ticket}")

    run_medians = {False: [], True: []}  # per run: median step time
    with tempfile.TemporaryDirectory() as tmp:
        for with_callback in (False, True):  # untimed: the first runs in a process are slower (allocator, caches)
            train(base, ticket, with_callback, 4, tmp)
        for _ in range(args.rounds):
            for with_callback in (False, True, True, False):
                times = train(base, ticket, with_callback, args.steps, tmp)
                run_medians[with_callback].append(statistics.median(times))
                gc.collect()  # the previous Trainer and model copy, before the next run allocates its own
        paired = paired_step_times(base, ticket, args.paired_steps, tmp)

    print(
        f"Trainer runs ({args.rounds * 2} per side x {args.steps} steps, first 2 steps of each run skipped), "
        "median step time per run:"
    )
    for with_callback in (False, True):
        label = "with callback" if with_callback else "without"
        print(f"  {label:>13}: " + ", ".join(f"{1e3 * t:.1f}" for t in run_medians[with_callback]) + " ms")
    for label, stat in (("median run", statistics.median), ("fastest run", min)):
        plain, ticketed = stat(run_medians[False]), stat(run_medians[True])
        print(
            f"  {label:>11}: without {1e3 * plain:.1f} ms, with {1e3 * ticketed:.1f} ms, "
            f"ratio {ticketed / plain:.4f} ({100 * (ticketed / plain - 1):+.2f}%, target <= +3%)"
        )
    ratios = [with_cb / without for with_cb, without in zip(paired[True], paired[False])]
    print(
        f"paired steps ({args.paired_steps} per side, alternating): median step without "
        f"{1e3 * statistics.median(paired[False]):.1f} ms, with {1e3 * statistics.median(paired[True]):.1f} ms; "
        f"median of paired ratios {statistics.median(ratios):.4f} "
        f"({100 * (statistics.median(ratios) - 1):+.2f}%, target <= +3%)"
    )
    plain = statistics.median(paired[False])
    mul, fill = enforcement_pass_ms(base, ticket)
    print(
        f"one masking pass over {ticket.num_weights / 1e6:.1f}M target weights: mul_ by uint8 masks "
        f"{mul:.2f} ms, x2 per step (grads + weights) = {200 * mul / 1e3 / plain:.2f}% of a step; "
        f"masked_fill_ by bool masks {fill:.2f} ms, x2 = {200 * fill / 1e3 / plain:.2f}%"
    )


if __name__ == "__main__":
    main()
