"""A small plain-loop IMP run (Accelerate), for tests/test_imp.py to kill, resume and launch on 2 ranks.

    python tests/imp_kill_script.py OUT_DIR [--rounds 4] [--steps 60] [--baseline none] [--strategy S] [--probe DIR]
                                    [--trainer --save_steps 4 --logging_steps 2] [--kill_at POINT] [--hold]

The encoder ("pre-trained" θ0) is the same in every process; the classification head is
re-initialised from ``--head_seed``: give a resumed run another one, and it only gets the first
run's head back from ``OUT_DIR/theta0.safetensors``. Under ``torchrun --nproc_per_node 2`` Accelerate wraps the
model in DDP and shards the batches; ``--probe`` makes every rank dump the masks it trained with
and its final weights, for the test to compare. ``--trainer`` runs the rounds with the stock
Trainer (``run_with_trainer``) instead of the plain loop. ``--kill_at`` makes the script SIGKILL itself
at a chosen moment (a real kill: no cleanup runs): ``step:R:S`` at the end of step S of round R
(Trainer), ``train_end:R`` once round R's Trainer has finished (its last checkpoint written, its
metrics.json not yet), ``summary:R`` just before ``results.json`` is renamed into place after round
R's ``metrics.json`` was written. ``--strategy`` is IMPConfig's (e.g. ``heads+neurons``: a structured run).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset
from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/, for tiny.py

from tiny import tiny_model  # noqa: E402

from hf_tickets import IMPConfig, IMPManager  # noqa: E402


def token_five_data(n: int, seed: int, length: int = 12) -> TensorDataset:
    """Label 1 iff token 5 occurs: separable, so even a tiny BERT learns it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 99, (n, length), generator=g)
    labels = torch.arange(n) % 2
    positions = torch.randint(0, length, (n,), generator=g)
    ids[labels == 1, positions[labels == 1]] = 5
    return TensorDataset(ids, labels)


class DictData(torch.utils.data.Dataset):
    def __init__(self, data: TensorDataset):
        self.ids, self.labels = data.tensors

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(TrainerCallback):
    """SIGKILL this process at ``step:R:S`` or ``train_end:R`` of round ``index``."""

    def __init__(self, point: str, index: int):
        kind, _, rest = point.partition(":")
        self.kind, self.active = kind, rest.split(":")[0] == str(index)
        self.step = int(rest.split(":")[1]) if kind == "step" else None

    def on_step_end(self, args, state, control, **kwargs):
        if self.active and self.kind == "step" and state.global_step == self.step:
            die()

    def on_train_end(self, args, state, control, **kwargs):
        if self.active and self.kind == "train_end":
            die()


def kill_before_summary(output_dir: str, index: int) -> None:
    """SIGKILL when results.json is about to be renamed into place once round ``index`` is complete."""
    replace = os.replace

    def replacing(src, dst, *args, **kwargs):
        done = Path(output_dir, f"round_{index:02d}", "metrics.json").is_file()
        if done and Path(os.fsdecode(dst)).name == "results.json":
            die()
        return replace(src, dst, *args, **kwargs)

    os.replace = replacing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--baseline", default="none")
    parser.add_argument("--strategy", default=None, help="IMPConfig.strategy (default: global_magnitude)")
    parser.add_argument("--probe", default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--head_seed", type=int, default=0)
    parser.add_argument("--train_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--trainer", action="store_true")
    parser.add_argument("--save_steps", type=int, default=4)
    parser.add_argument("--logging_steps", type=int, default=2)
    parser.add_argument("--kill_at", default=None)
    parser.add_argument("--hold", action="store_true", help="sleep inside round 0 until killed (holds the lock)")
    args = parser.parse_args()
    if args.kill_at and args.kill_at.startswith("summary:"):
        kill_before_summary(args.output_dir, int(args.kill_at.split(":")[1]))

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.set_num_threads(1)  # same arithmetic in every process (and two runs fit on two cores)
    accelerator = Accelerator(cpu=True)
    model = tiny_model(BertForSequenceClassification)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.head_seed)
        model.classifier.reset_parameters()
    model.train()
    train_data = token_five_data(args.train_size, seed=0)
    model = accelerator.prepare(model)
    if accelerator.num_processes > 1:  # the manager must prune through the DDP wrapper, on every rank
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel), type(model)
    eval_ids, eval_labels = token_five_data(256, seed=1).tensors

    config = IMPConfig(imp_rounds=args.rounds, baseline=args.baseline, strategy=args.strategy, imp_seed=0)
    if args.trainer:
        run_trainer(model, config, args, train_data, token_five_data(256, seed=1))
        return
    manager = IMPManager(model, config, args.output_dir)
    trained_masks = {}
    for rnd in manager.rounds(total_steps=args.steps):
        if args.hold:
            print("HOLDING", flush=True)
            while True:
                time.sleep(1)
        # Fresh optimizer, and a loader prepared in the round: under several processes Accelerate seeds the
        # shuffling generator when the loader is prepared, so the order then follows the round's seed.
        optimizer = accelerator.prepare(torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1))
        loader = accelerator.prepare(DataLoader(train_data, batch_size=args.batch_size, shuffle=True))
        step = 0
        while step < args.steps:
            for ids, labels in loader:
                loss = model(input_ids=ids, labels=labels).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                manager.apply_masks()
                step += 1
                if step == args.steps:
                    break
        model.eval()
        with torch.no_grad():
            accuracy = (model(input_ids=eval_ids).logits.argmax(-1) == eval_labels).float().mean().item()
        model.train()
        trained_masks.update({f"round{rnd.index}/{n}": m for n, m in rnd.ticket.masks.items()})
        rnd.finish({"eval_accuracy": accuracy, "train_loss": loss.item()})

    if args.probe:
        probe = Path(args.probe)
        probe.mkdir(parents=True, exist_ok=True)
        weights = {f"weight/{k}": v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_file({**trained_masks, **weights}, probe / f"rank{accelerator.process_index}.safetensors")
    accelerator.wait_for_everyone()
    print("IMP DONE", manager.matching_round()["sparsity"], flush=True)


def run_trainer(model, config, args, train_data, eval_data) -> None:
    manager = IMPManager(model, config, args.output_dir)

    def build(model, rnd):
        training = TrainingArguments(
            output_dir=str(rnd.checkpoint_dir),
            use_cpu=True,
            report_to=[],
            max_steps=args.steps,
            learning_rate=args.lr,
            weight_decay=0.1,
            per_device_train_batch_size=args.batch_size,
            logging_steps=args.logging_steps,
            save_steps=args.save_steps,
            disable_tqdm=True,
            seed=0,
        )
        callbacks = [KillAt(args.kill_at, rnd.index)] if args.kill_at and not args.kill_at.startswith("summary") else []
        return Trainer(
            model=model,
            args=training,
            train_dataset=DictData(train_data),
            eval_dataset=DictData(eval_data),
            callbacks=callbacks,
        )

    results = manager.run_with_trainer(build)
    print("IMP DONE", results["matching"]["sparsity"], flush=True)


if __name__ == "__main__":
    main()
