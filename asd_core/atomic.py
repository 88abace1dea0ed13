"""Atomic file writes: a temp file in the target's folder, fsync, then one rename.

A crash or kill at any moment leaves either the old file or the new one, never half of
one. mkstemp creates files 0600; the result gets the usual umask-based mode instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temp path to write to; on success it replaces `path`, on error it is removed.

    `suffix` defaults to the target's own (writers that choose a format by extension need it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix if suffix is None else suffix,
                                dir=path.parent)
    os.close(fd)
    try:
        yield temp
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """safetensors.torch.save_file, atomically."""
    import safetensors.torch

    with atomic_path(path, suffix=".tmp") as temp:
        safetensors.torch.save_file(tensors, temp, metadata=metadata)
