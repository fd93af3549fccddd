"""Several processes: who writes, identical masks on every rank, and sharded weights.

Everything here is a no-op (or the identity) in a single process, and costs no copy there, so
the core calls these helpers unconditionally. Under ``torch.distributed``:

- masks are computed once, on the main process, and broadcast bit-packed (``masks_from_main``,
  ``broadcast_masks``), so every rank holds the same ticket whatever each rank computed;
- sharded parameters are scored on their full weights (``full_weight``: FSDP2 DTensors through
  ``full_tensor()``, DeepSpeed ZeRO-3 parameters through ``GatheredParameters``) and masked on the
  shard each rank holds (``local_view`` + ``local_mask``). Gathering is collective: every rank
  must make the same calls in the same order.

Only ``torch.distributed`` is imported here; deepspeed is imported lazily and only when a
ZeRO-3 parameter is met.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import TicketError
from .fileio import pack_mask, unpack_mask
from .targets import unwrap_model

logger = logging.getLogger(__name__)

Masks = dict[str, torch.Tensor]


# ------------------------------------------------------------------ processes
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
        header = {"error": repr(error)} if error is not None else {"shapes": [(n, tuple(m.shape)) for n, m in masks.items()]}
    header = broadcast_object(header, src=src)
    if "error" in header:
        raise TicketError(f"rank {src} could not compute the ticket's masks: {header['error']}")
    shapes = header["shapes"]
    total = sum(math.prod(shape) for _, shape in shapes)
    device = _comm_device()
    if sending:
        flat = torch.cat([m.detach().reshape(-1).cpu() for m in masks.values()]) if masks else torch.zeros(0, dtype=torch.bool)
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


# --------------------------------------------------------- sharded weights
def is_dtensor(p: torch.Tensor) -> bool:
    """A DTensor, as FSDP2 (``fully_shard``) and tensor parallelism make parameters into.

    Importing ``torch.distributed.tensor`` takes ~0.5 s; no DTensor can exist before it is
    imported, so it is only looked up, never imported, here.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(p, module.DTensor)


def is_zero3(p: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 parameter: ``p.data`` is empty, each rank holds a flat slice in ``p.ds_tensor``."""
    return hasattr(p, "ds_tensor") and hasattr(p, "ds_shape")


def full_shape(p: torch.Tensor) -> torch.Size:
    """The parameter's logical shape, also when this rank holds only a piece of it."""
    return torch.Size(p.ds_shape) if is_zero3(p) else p.shape


def full_weight(p: torch.Tensor) -> torch.Tensor:
    """The whole weight, detached. Plain tensors come back as they are (no copy).

    For sharded parameters this is a collective: every rank must call it, for the same
    parameters in the same order. The result is a new tensor; writing to it changes nothing.
    """
    if is_dtensor(p):
        return p.detach().full_tensor()
    if is_zero3(p):
        import deepspeed  # only reached when deepspeed made this parameter

        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            return p.data.detach().clone()
    return p.detach()


def local_view(p: torch.Tensor) -> torch.Tensor:
    """The tensor this rank stores for ``p``: writing to it (under ``no_grad``) changes the parameter.

    DTensor: its local shard; ZeRO-3: the flat, padded partition; plain tensors: themselves.
    """
    if is_dtensor(p):
        return p.to_local()
    if is_zero3(p):
        return p.ds_tensor
    return p


def local_mask(mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The part of the full ``mask`` that lines up with ``local_view(p)``, on its device.

    DTensor: chunked exactly as ``p`` (``src_data_rank=None``: every rank cuts its own piece from
    its own copy of the mask, no communication; masks are identical on all ranks). ZeRO-3: this
    rank's slice of the flattened mask, padded with True (keep) like DeepSpeed pads the partition.
    """
    if is_dtensor(p):
        from torch.distributed.tensor import distribute_tensor

        local = distribute_tensor(mask.to(p.device_mesh.device_type), p.device_mesh, p.placements, src_data_rank=None)
        return local.to_local().to(p.to_local().device)
    if is_zero3(p):
        partition = p.ds_tensor
        size = partition.ds_numel if hasattr(partition, "ds_numel") else partition.numel()
        start = size * dist.get_rank(group=p.ds_process_group)
        piece = mask.reshape(-1)[start : start + size]
        if piece.numel() < size:
            piece = torch.cat([piece, torch.ones(size - piece.numel(), dtype=torch.bool)])
        return piece.to(partition.device)
    return mask.to(p.device)


def zero_pruned_(p: torch.Tensor, mask: torch.Tensor) -> None:
    """Set the weights of ``p`` that the full keep-``mask`` prunes to zero, on this rank's shard.

    Call under ``torch.no_grad()``. No communication. Under ZeRO-3 every copy this rank keeps is
    zeroed: the partition, the full weight while it is gathered (small "persistent" parameters
    stay gathered all the time), and the optimizer's fp32 master partition, which DeepSpeed
    copies over the partition after every step.
    """
    keep = local_mask(mask, p)
    local_view(p).masked_fill_(~keep, 0)
    if is_zero3(p) and p.data.numel() == mask.numel():
        p.data.masked_fill_(~mask.to(p.data.device).reshape(p.data.shape), 0)
    if is_zero3(p) and getattr(p, "_z3_optimizer", None) is not None and p.requires_grad:
        from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

        master = safe_get_local_fp32_param(p)
        safe_set_local_fp32_param(p, master.masked_fill(~keep.to(master.device), 0))


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every tensor whole, on CPU: what ``save_pretrained(state_dict=...)`` writes.

    Same keys as ``state_dict()`` (tied weights under each name, no non-persistent buffers).
    Collective when the model is sharded (every rank must call it); only the main process should
    save the result. Tensors of a plain model on CPU are returned as they are, NOT copied: clone
    them to keep a snapshot that training must not change.
    """
    model = unwrap_model(model)
    # The Parameter objects themselves: ZeRO-3's state_dict() holds empty stand-ins without ds_* attributes.
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return {name: full_weight(tensors[name]).cpu() for name in model.state_dict()}


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Copy full (unsharded) tensors, e.g. θ0 from ``full_state_dict``, into ``model``: each rank into its shard.

    The counterpart of ``full_state_dict`` for rewinding a sharded model; ``load_state_dict`` for a
    plain one. No communication: every rank must hold the same ``state``. ``strict``: its keys
    must be exactly ``model.state_dict()``'s (else tensors it lacks are left alone).
    """
    model = unwrap_model(model)
    if strict:
        expected = model.state_dict().keys()
        missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
        if missing or unexpected:
            raise TicketError(f"state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(full_shape(tensor)):
                raise TicketError(f"{name}: the state has shape {tuple(value.shape)}, the model {tuple(full_shape(tensor))}")
            if is_dtensor(tensor):
                from torch.distributed.tensor import distribute_tensor

                piece = distribute_tensor(
                    value.to(tensor.device_mesh.device_type), tensor.device_mesh, tensor.placements, src_data_rank=None
                ).to_local()
                tensor.to_local().copy_(piece)
            elif is_zero3(tensor):
                _load_zero3(tensor, value)
            else:
                tensor.copy_(value)


def _load_zero3(p: torch.Tensor, value: torch.Tensor) -> None:
    """This rank's slice of ``value`` into every copy DeepSpeed keeps of ``p`` (see ``zero_pruned_``)."""
    partition = p.ds_tensor
    size = partition.ds_numel if hasattr(partition, "ds_numel") else partition.numel()
    start = size * dist.get_rank(group=p.ds_process_group)
    piece = torch.zeros(size, dtype=partition.dtype)
    flat = value.reshape(-1)[start : start + size]
    piece[: flat.numel()] = flat
    partition.copy_(piece)
    if p.data.numel() == value.numel():  # gathered (persistent) parameter
        p.data.copy_(value.reshape(p.data.shape))
    if getattr(p, "_z3_optimizer", None) is not None and p.requires_grad:
        from deepspeed.utils import safe_set_local_fp32_param

        safe_set_local_fp32_param(p, piece.float())


# --------------------------------------------------------------- launching
def _num_processes_in_argv(argv: list[str]) -> int | None:
    """``--num_processes N`` / ``--num-processes=N`` (or an argparse abbreviation) in an ``accelerate launch`` line."""
    for i, token in enumerate(argv):
        flag, _, value = token.partition("=")
        flag = flag.replace("-", "_")
        if len(flag) >= len("__num_p") and "__num_processes".startswith(flag):
            if not value and i + 1 < len(argv):
                value = argv[i + 1]
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _accelerate_launch_args(cmdline: list[str]) -> list[str] | None:
    """The arguments after ``launch`` if ``cmdline`` is an ``accelerate launch`` command, else None."""
    for i, token in enumerate(cmdline):
        name = Path(token).name
        if name == "accelerate-launch" or token == "accelerate.commands.launch":
            return cmdline[i + 1 :]
        if name in {"accelerate", "accelerate.exe"} or token == "accelerate.commands.accelerate_cli":
            if cmdline[i + 1 : i + 2] == ["launch"]:
                return cmdline[i + 2 :]
    return None


def _configured_num_processes(launch_args: list[str]) -> int | None:
    """``num_processes`` from the accelerate config file the launch used (``--config_file`` or the default)."""
    config_file = None
    for i, token in enumerate(launch_args):
        flag, _, value = token.partition("=")
        if flag.replace("-", "_") == "__config_file":
            config_file = value or (launch_args[i + 1] if i + 1 < len(launch_args) else None)
    if config_file is None:
        try:
            from accelerate.commands.config import default_config_file as config_file
        except ImportError:
            return None
    try:
        import yaml

        value = (yaml.safe_load(Path(config_file).read_text()) or {}).get("num_processes")
        return int(value) if value is not None else None
    except (OSError, ValueError, TypeError, AttributeError, ImportError, yaml.YAMLError):
        return None


def _ancestor_cmdlines(levels: int = 3) -> list[list[str]]:
    try:
        import psutil  # a dependency of accelerate

        process, lines = psutil.Process(), []
        for _ in range(levels):
            process = process.parent()
            if process is None:
                break
            lines.append(process.cmdline())
        return lines
    except Exception:  # no psutil, or a parent we may not inspect: nothing to learn from it
        return []


def requested_num_processes() -> int | None:
    """How many processes the launcher was asked for, whatever it actually started.

    ``WORLD_SIZE`` (set by torchrun and accelerate's multi-process launchers), else the
    ``--num_processes`` (or configured ``num_processes``) of an ``accelerate launch`` parent.
    """
    requested = []
    if os.environ.get("WORLD_SIZE", "").isdigit():
        requested.append(int(os.environ["WORLD_SIZE"]))
    for cmdline in _ancestor_cmdlines():
        launch_args = _accelerate_launch_args(cmdline)
        if launch_args is not None:
            script_at = next((i for i, a in enumerate(launch_args) if a.endswith(".py") or a == "-m"), len(launch_args))
            own_args = launch_args[:script_at]  # the script's own --num_processes is not the launcher's
            count = _num_processes_in_argv(own_args)
            requested.append(count if count is not None else _configured_num_processes(own_args))
            break
    requested = [r for r in requested if r is not None]
    return max(requested) if requested else None


def warn_if_single_process_requested() -> str | None:
    """Warn loudly when more processes were asked for than are running together; return the message.

    ``accelerate launch --cpu --num_processes 2`` starts ONE process without a word; CPU data
    parallelism needs ``accelerate launch --multi_gpu --num_processes 2`` (with ``use_cpu=True`` /
    ``Accelerator(cpu=True)``) or ``torchrun --nproc_per_node 2``. Call this after the Accelerator
    or TrainingArguments exist (they start the process group).
    """
    requested, actual = requested_num_processes(), world_size()
    if requested is None or requested <= actual:
        return None
    if is_initialized():
        why = f"the process group has {actual} member(s)"
    elif int(os.environ.get("WORLD_SIZE", 1)) > 1:
        why = "torch.distributed is not initialised in this process yet (create the Accelerator / TrainingArguments first)"
    else:
        why = "the launcher started a single process"
    message = (
        f"\n{'!' * 78}\n{requested} processes were requested but this run has {actual}: {why}.\n"
        "`accelerate launch --cpu --num_processes N` starts a single process. For N CPU processes use\n"
        "`accelerate launch --multi_gpu --num_processes N` (with --use_cpu / Accelerator(cpu=True)) or\n"
        f"`torchrun --nproc_per_node N`.\n{'!' * 78}"
    )
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message


def distributed_info() -> dict:
    """What results.json records about the processes of a run."""
    return {
        "world_size": world_size(),
        "backend": str(dist.get_backend()) if is_initialized() else None,
        "requested_num_processes": requested_num_processes(),
    }


# ------------------------------------------------------------ Trainer loss
def use_true_loss(model: torch.nn.Module) -> torch.nn.Module:
    """Make the Trainer log (and backpropagate) the model's real mean loss under DDP and gradient accumulation.

    transformers 5 treats every model whose ``forward`` takes ``**kwargs`` as normalising its loss
    by ``num_items_in_batch`` (the label count summed over the accumulated micro-batches and, with
    ``average_tokens_across_devices=True`` (the default), over all processes). Trusting that, the
    Trainer multiplies the loss by the number of processes and skips the division by
    ``gradient_accumulation_steps``. BERT's heads take ``**kwargs`` but compute a plain
    ``CrossEntropyLoss``/``MSELoss`` mean and ignore ``num_items_in_batch``, so the logged loss,
    the eval loss and the gradients come out world_size (x accumulation steps) too large; gradient
    clipping then bites on the inflated norm. Declaring ``accepts_loss_kwargs = False`` on such a
    model makes the Trainer average per micro-batch instead. Models whose forward does use
    ``self.loss_function`` (which honours ``num_items_in_batch``) are left alone.
    Call before building the ``Trainer``; returns ``model``.
    """
    target = unwrap_model(model)
    if not _loss_uses_num_items(target):
        target.accepts_loss_kwargs = False
    return model


def _loss_uses_num_items(model: torch.nn.Module) -> bool:
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):  # no source: assume the plain mean, which is always a correct average
        return False
    return "self.loss_function(" in source
