"""How the run was launched: the number of processes asked for (accelerate/torchrun lines,
accelerate's YAML) against the number running, and what results.json records about them.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch.distributed as dist

from hf_tickets.core.collectives import is_initialized, world_size

logger = logging.getLogger(__name__)


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
        why = (
            "torch.distributed is not initialised in this process yet "
            "(create the Accelerator / TrainingArguments first)"
        )
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
