"""Atomic file writes (torch-free, so the ONNX prediction path can use them).

`atomic_write(path, write)` calls `write(tmp)` on a temporary file in the same folder, fsyncs it
and renames it onto `path`; if `write` raises, the temporary file is removed and `path` is left
as it was. A reader therefore never sees a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, write, suffix: str = ".tmp") -> None:
    """Call `write(tmp_path)` then rename onto `path` (same folder, so the rename is atomic).

    `suffix` is the temporary file's ending (some writers look at it, e.g. `.onnx`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
