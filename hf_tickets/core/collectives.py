"""Several processes: who writes, and identical masks on every rank (no-ops in one process).

Masks are computed once, on the main process, and broadcast bit-packed (``masks_from_main``,
``broadcast_masks``), so every rank holds the same ticket whatever each rank computed. Only
``torch.distributed`` is imported here.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from hf_tickets.core.errors import TicketError
from hf_tickets.core.ticket_files import pack_mask, unpack_mask

Masks = dict[str, torch.Tensor]
T = TypeVar("T")


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    if is_initialized():
        return dist.get_rank()
    # Launched by torchrun/accelerate but before the process group exists: the launcher's word.
    return int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    """True on the one process that writes files (rank 0, or the only process)."""
    return rank() == 0


def is_distributed() -> bool:
    """More than one process to agree with."""
    return world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collective tensors must live: CPU for gloo, the current accelerator for NCCL and the like."""
    backend = str(dist.get_backend())
    if "gloo" in backend or backend == "mpi":
        return torch.device("cpu")
    accelerator = torch.accelerator.current_accelerator()
    if accelerator is None:
        return torch.device("cpu")
    return torch.device(accelerator.type, torch.accelerator.current_device_index())


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (pickled; for small things like round numbers and paths)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(work: Callable[[], T]) -> T:
    """Run ``work()`` on the main process only; its result, or its failure, on every rank.

    For what only the main process does before the others go on (file writes, reading state):
    if it raises there, every rank raises the same error at once, instead of the other ranks
    waiting at the next collective until the process group times out. Also a barrier: no rank
    returns before the main process has finished ``work``. The result is pickled: keep it small.
    """
    if not is_distributed():
        return work()
    result, error = None, None
    if is_main_process():
        try:
            result = work()
        except Exception as err:  # re-raised below, after the other ranks were told
            error = err
    outcome = broadcast_object(("ok", result) if error is None else ("error", _portable(error)))
    if outcome[0] == "error":
        if error is not None:
            raise error
        raise outcome[1]
    return outcome[1]


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (most do, as their type and message), else a TicketError saying it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return TicketError(f"the main process failed: {type(error).__name__}: {error}")


def join_uneven_inputs(*modules: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Context for a training loop in which ranks may see different numbers of batches.

    A DDP rank that runs out of batches keeps answering the others' gradient all-reduces
    (``torch.distributed.algorithms.join.Join``) instead of leaving them waiting forever, and the
    final weights are synchronised on exit. Unlike ``Accelerator.join_uneven_inputs`` this also
    works on CPU (gloo). A no-op in one process or for modules not wrapped in DDP.
    """
    from torch.nn.parallel import DistributedDataParallel

    ddp = [m for m in modules if isinstance(m, DistributedDataParallel)]
    if not is_distributed() or not ddp:
        return contextlib.nullcontext()
    from torch.distributed.algorithms.join import Join

    return Join(ddp)


# ------------------------------------------------------------------- masks
def broadcast_masks(masks: Masks | None, src: int = 0) -> Masks:
    """Rank ``src``'s masks on every rank; other ranks may pass ``None``.

    Names and shapes travel as one small object, the masks as one bit-packed uint8 tensor
    (1 bit per weight: ~11 MB for BERT-base). Without other processes this returns ``masks``.
    """
    return _broadcast_masks(masks, None, src)


def masks_from_main(compute: Callable[[], Masks]) -> Masks:
    """Run ``compute()`` on the main process only and give its masks to every rank.

    If it raises there, every rank raises (the main process its own error), instead of the other
    ranks waiting forever for masks that never come.
    """
    if not is_distributed():
        return compute()
    masks, error = None, None
    if is_main_process():
        try:
            masks = compute()
        except Exception as err:  # re-raised below, after the other ranks were told
            error = err
    try:
        return _broadcast_masks(masks, error, 0)
    except TicketError:
        if error is not None:
            raise error from None
        raise


def _broadcast_masks(masks: Masks | None, error: BaseException | None, src: int) -> Masks:
    if not is_distributed():
        if masks is None:
            raise TicketError("broadcast_masks: no masks given and no other process to receive them from")
        return masks
    sending = rank() == src
    if sending and error is None and masks is None:
        error = TicketError(f"broadcast_masks: rank {src} is the source but has no masks")
    header = None
    if sending:
        header = (
            {"error": repr(error)} if error is not None else {"shapes": [(n, tuple(m.shape)) for n, m in masks.items()]}
        )
    header = broadcast_object(header, src=src)
    if "error" in header:
        raise TicketError(f"rank {src} could not compute the ticket's masks: {header['error']}")
    shapes = header["shapes"]
    total = sum(math.prod(shape) for _, shape in shapes)
    device = _comm_device()
    if sending:
        flat = (
            torch.cat([m.detach().reshape(-1).cpu() for m in masks.values()])
            if masks
            else torch.zeros(0, dtype=torch.bool)
        )
        packed = pack_mask(flat).to(device)
    else:
        packed = torch.empty(math.ceil(total / 8), dtype=torch.uint8, device=device)
    dist.broadcast(packed, src=src)
    if sending:
        return {name: m.detach().cpu() for name, m in masks.items()}
    flat = unpack_mask(packed.cpu(), [total])
    sizes = [math.prod(shape) for _, shape in shapes]
    # Own storage per mask (split gives views of one buffer, which e.g. safetensors refuses to save).
    return {name: part.reshape(shape).clone() for (name, shape), part in zip(shapes, flat.split(sizes))}
