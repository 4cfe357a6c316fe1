"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves the old file intact.

The file gets the mode a plain ``open(path, "w")`` would give it: an existing file keeps its mode, a new one gets
0666 minus the process umask (the temporary file, which ``mkstemp`` creates as 0600, is changed before the rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only read by setting)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically (with the mode a plain
    write would give, see the module docstring), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_path(path: str | os.PathLike, kind: str = "file") -> Path:
    """Check, before any work, that ``path`` can be written as a ``kind`` ("file" or "folder"): not an existing
    entry of the other kind, no file in the way among its parents, and the nearest existing folder writable (a
    probe file is created and removed there). Raises ValueError naming the problem."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    parent = path if kind == "folder" else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is a file, not a folder")
    folder = path if kind == "folder" and path.is_dir() else parent
    try:  # a real probe: permissions, read-only file systems and quotas all show here, for any user
        fd, probe = tempfile.mkstemp(prefix=".gsmt-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write {path}: {folder} is not writable ({error.strerror})") from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
