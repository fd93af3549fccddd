"""python trainer_loss.py OUT  |  accelerate launch --multi_gpu --num_processes 2 trainer_loss.py OUT

Trains a tiny BERT classifier with the stock Trainer, with and without ``use_true_loss``, and
writes each run's logged training losses and gradient norms to OUT/<run>.json (main process
only). One process runs the reference (batch 4) and gradient accumulation (2 x 2); two processes
run batch 2 per device: every optimizer step sees the same 4 examples in all of them.
"""

import json
import os
import sys
from pathlib import Path

import torch
from common import finish, tiny_model
from transformers import BertForSequenceClassification, Trainer, TrainingArguments

from hf_tickets.core.collectives import is_main_process, world_size
from hf_tickets.training.trainer_loss import use_true_loss

out = Path(sys.argv[1])


class Examples(torch.utils.data.Dataset):
    def __init__(self, n=32, length=8):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 99, (n, length), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def run(name: str, per_device_batch: int, accumulation: int, fix: bool) -> None:
    # No dropout: runs with different process layouts must compute the same function.
    model = tiny_model(BertForSequenceClassification, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if fix:
        use_true_loss(model)
    args = TrainingArguments(
        output_dir=str(out / name),
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=accumulation,
        max_steps=4,
        logging_steps=1,
        learning_rate=1e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Examples())
    trainer.train()
    history = [e for e in trainer.state.log_history if "loss" in e]
    if is_main_process():
        record = {
            "world_size": world_size(),
            "loss": [e["loss"] for e in history],
            "grad_norm": [e["grad_norm"] for e in history],
        }
        (out / f"{name}.json").write_text(json.dumps(record))


out.mkdir(parents=True, exist_ok=True)
if int(os.environ.get("WORLD_SIZE", 1)) == 1:  # the process group starts with TrainingArguments
    run("single", 4, 1, fix=False)
    run("accumulate_stock", 2, 2, fix=False)
    run("accumulate_fixed", 2, 2, fix=True)
else:
    run("ddp_stock", 2, 1, fix=False)
    run("ddp_fixed", 2, 1, fix=True)
finish()
