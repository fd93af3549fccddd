"""Files that are never half-written: write to a temporary name in the target directory, then rename.

A process killed at any moment leaves either the old file or the new one, plus at most a temporary
folder ``.<name>.<pid>.<random>.tmp`` that :func:`remove_stale_temporaries` deletes once its writer is gone.
Written files get the mode an ordinary ``open()`` would give them (``0o666`` minus the umask), not
the private ``0o600`` of ``mkstemp``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_WRITER_RE = re.compile(r"(?P<pid>\d+)\.[^.]+")


def current_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it and put it back
    os.umask(mask)
    return mask


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temporary(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, flushed to disk, with the user's
    default mode. The caller :func:`commit`-s it or :func:`discard`-s it.

    The temporary lives in its own hidden folder ``.<name>.<pid>.<random>.tmp``, so whatever the writer
    itself leaves there when killed (safetensors writes through its own ``.tmpXXXXXX``) goes with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    tmp = folder / path.name
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        _fsync(tmp)
    except BaseException:
        discard(tmp)
        raise
    return tmp


def discard(tmp: str | os.PathLike) -> None:
    """Delete a temporary from :func:`write_temporary` and its folder (only ever that folder)."""
    tmp = Path(tmp)
    folder = tmp.parent
    if folder.name.startswith(f".{tmp.name}.") and folder.name.endswith(".tmp"):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename the finished temporary ``tmp`` onto ``path`` and make the rename durable."""
    path = Path(path)
    os.replace(tmp, path)
    _fsync(path.parent, directory=True)
    discard(tmp)  # the emptied temporary folder; a plain file was renamed away already
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the result onto ``path``."""
    tmp = write_temporary(path, write)
    try:
        return commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete temporaries of ``names`` in ``directory`` whose writing process no longer runs."""
    directory, names = Path(directory), set(names)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        name = next((n for n in names if path.name.startswith(f".{n}.") and path.name.endswith(".tmp")), None)
        if name is None:
            continue
        writer = _WRITER_RE.fullmatch(path.name[len(name) + 2 : -len(".tmp")])
        # A temporary without a pid was written by an older hf_tickets, whose writer is long gone.
        if writer is None or not _alive(int(writer["pid"])):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
