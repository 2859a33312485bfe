"""Atomic file writes: an output either appears complete or not at all.

Everything is written to a temporary file in the destination's directory and renamed over
the destination, so an interrupted job never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iwae.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it to `path`, on error delete it.

    `suffix` ends the temporary name, for libraries that infer a format from it (matplotlib).
    A file system that refuses the write (full, read-only, no permission) is a one-line error.
    """
    path = Path(path)
    with _refusal(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        with _refusal(path):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should be shareable
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _refusal(path: Path) -> Iterator[None]:
    """OSErrors of the file system (disk full, read-only, permissions) as a UserError naming `path`."""
    try:
        yield
    except OSError as e:
        if e.errno is None:
            raise
        raise UserError(f"{path}: cannot write ({e.strerror or os.strerror(e.errno)})") from None


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output whose directory cannot take files (the one-line
    error that writing it would give at the end). Creates nothing: the nearest existing
    directory on the way is tried."""
    path = Path(path)
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    with _refusal(path):
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=existing)
        os.close(fd)
        os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    """torch.save, atomically. Serialised in memory first: the archive's entries are then
    named alike for every file (not after the temporary name), so identical content gives
    identical bytes, and a full disk is an OSError of Python's own write."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    # numpy scalars and arrays, Paths: the only non-JSON types records contain
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
