"""A small plain-loop IMP run (Accelerate), for tests/test_imp.py to kill, resume and launch on 2 ranks.

    python tests/imp_kill_script.py OUT_DIR [--rounds 4] [--steps 60] [--baseline none] [--probe DIR]

The encoder ("pre-trained" θ0) is the same in every process; the classification head is
re-initialised from ``--head_seed``: give a resumed run another one, and it only gets the first
run's head back from ``OUT_DIR/theta0.safetensors``. Under ``torchrun --nproc_per_node 2`` Accelerate wraps the
model in DDP and shards the batches; ``--probe`` makes every rank dump the masks it trained with
and its final weights, for the test to compare.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset
from transformers import BertForSequenceClassification

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--baseline", default="none")
    parser.add_argument("--probe", default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--head_seed", type=int, default=0)
    parser.add_argument("--train_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()

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

    config = IMPConfig(imp_rounds=args.rounds, baseline=args.baseline, imp_seed=0)
    manager = IMPManager(model, config, args.output_dir)
    trained_masks = {}
    for rnd in manager.rounds(total_steps=args.steps):
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


if __name__ == "__main__":
    main()
