"""accelerate launch --multi_gpu --num_processes 2 ddp_imp.py PROBE OUT PHASE

IMPManager's plain loop under DDP (CPU, gloo), ranks seeing different numbers of batches.
PHASE "first": an uninterrupted run in OUT/full, and a run in OUT/part stopped after round 1;
PHASE "resume": OUT/part resumed to the end. Rank 1 records any file it writes under OUT.
"""

import builtins
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from common import dump, finish, masks_of, tiny_model
from transformers import BertForSequenceClassification

from hf_tickets.core.collectives import join_uneven_inputs, rank
from hf_tickets.training.imp import IMPConfig, IMPManager

probe, out, phase = sys.argv[1], Path(sys.argv[2]).resolve(), sys.argv[3]

# --------------------------------------------- every write under OUT by this rank
writes = []


def _under_out(path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(out)
    except (TypeError, ValueError, OSError):
        return False


def _recording(fn, is_write=lambda *a, **k: True):
    def wrapper(*args, **kwargs):
        if args and _under_out(args[0]) and is_write(*args, **kwargs):
            writes.append(f"{fn.__name__} {args[0]}")
        return fn(*args, **kwargs)

    return wrapper


def _writes_mode(file, mode="r", *args, **kwargs):
    return any(c in mode for c in "wax+")


builtins.open = _recording(builtins.open, _writes_mode)
os.replace, os.rename, os.mkdir, os.remove, os.unlink = (
    _recording(f) for f in (os.replace, os.rename, os.mkdir, os.remove, os.unlink)
)
shutil.rmtree = _recording(shutil.rmtree)
_mkstemp = tempfile.mkstemp
tempfile.mkstemp = lambda *a, dir=None, **k: (
    (writes.append(f"mkstemp {dir}") if _under_out(dir or ".") else None) or _mkstemp(*a, dir=dir, **k)
)

# ---------------------------------------------------------------------- the loop
accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(even_batches=False))
generator = torch.Generator().manual_seed(0)
examples = [
    {"input_ids": torch.randint(1, 99, (8,), generator=generator), "labels": torch.tensor(i % 2)} for i in range(9)
]


def imp(output_dir: Path, stop_after: int | None = None) -> dict:
    model = tiny_model(BertForSequenceClassification)
    loader = torch.utils.data.DataLoader(examples, batch_size=2)  # 9 examples: 3 batches on rank 0, 2 on rank 1
    model, loader = accelerator.prepare(model, loader)
    manager = IMPManager(model, IMPConfig(sparsity_schedule="0.3,0.5,0.6"), str(output_dir))
    seen = {"zero_after_every_step": True, "batches": [], "masks": {}, "rounds_run": []}
    for rnd in manager.rounds():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        params = rnd.ticket.parameters_of(model)
        batches = 0
        with join_uneven_inputs(model):
            for batch in loader:
                accelerator.backward(model(**batch).loss)
                optimizer.step()
                optimizer.zero_grad()
                manager.apply_masks()
                alive = sum(int(torch.count_nonzero(p.detach()[~rnd.ticket.masks[n]])) for n, p in params.items())
                seen["zero_after_every_step"] &= alive == 0
                batches += 1
        seen["batches"].append(batches)
        seen["rounds_run"].append(rnd.index)
        seen["masks"].update(masks_of(rnd.ticket, f"{output_dir.name}.round{rnd.index}."))
        rnd.finish({"eval_accuracy": 0.5 + 0.1 * rank()})  # ranks disagree: rank 0's number is the record
        if stop_after is not None and rnd.index == stop_after:
            break  # as if the job were killed here
    return seen


if phase == "first":
    full = imp(out / "full")
    part = imp(out / "part", stop_after=1)
    facts = {
        "full": {k: v for k, v in full.items() if k != "masks"},
        "part": {k: v for k, v in part.items() if k != "masks"},
    }
    masks = {**full["masks"], **part["masks"]}
else:
    resumed = imp(out / "part")
    facts = {"resumed": {k: v for k, v in resumed.items() if k != "masks"}}
    masks = resumed["masks"]
facts["writes"] = writes
dump(f"{probe}/{phase}", facts, masks)
finish()
