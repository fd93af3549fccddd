"""Shared by the scripts that tests/test_distributed.py launches on 2 processes.

Each rank writes what it holds to ``<probe>/rank<k>.json`` / ``.safetensors`` (the test compares
the ranks); the library's own output goes elsewhere, so "only rank 0 writes" stays checkable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny.py

from tiny import tiny_model  # noqa: E402,F401


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def dump(probe: str | os.PathLike, record: dict, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """This rank's findings: JSON facts, plus tensors (masks, weights) to compare across ranks."""
    probe = Path(probe)
    probe.mkdir(parents=True, exist_ok=True)
    (probe / f"rank{rank()}.json").write_text(json.dumps(record, indent=1))
    if tensors:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, probe / f"rank{rank()}.safetensors")


def masks_of(ticket, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + name: mask for name, mask in ticket.masks.items()}


def finish() -> None:
    """Leave the process group together. A rank that exits while its peer still holds gloo
    connections can make the peer abort ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
