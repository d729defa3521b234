"""Atomic file writes (torch-free, so the ONNX prediction path can use them).

`atomic_write(path, write)` calls `write(tmp)` on a temporary file in the same folder, fsyncs it
and renames it onto `path`; if `write` raises, the temporary file is removed and `path` is left
as it was. A reader therefore never sees a half-written file.

`os_error_reason` names the errors the file system gives (disk full, read-only, permission
denied...) so that callers can report them in one line; `check_writable_folder` probes an
output folder before any work is done.
"""

from __future__ import annotations

import errno
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a failed write() names no file: name the one being written
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# --- errors the file system gives (disk full, read-only, ...) as one line for the user --------

_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "name too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.EEXIST: "already exists",
    errno.EFBIG: "file too large",
    errno.EMLINK: "too many links",
    errno.ELOOP: "too many symbolic links",
    errno.EIO: "input/output error",
}


def os_error_reason(e: BaseException) -> str | None:
    """A short reason for an `OSError` the environment causes (disk full, read-only, permission
    denied...), or None when the error is not one of those (then it is a bug: keep the traceback)."""
    if isinstance(e, OSError) and e.errno in _REASONS:
        return _REASONS[e.errno]
    return None


def check_writable_folder(folder: str | Path, label: str) -> None:
    """Refuse (`UserError`, one line starting with `label`) a folder that cannot be written into:
    a regular file, a path under a file, a read-only or forbidden place. Probes by creating and
    removing a temporary file in the folder, or in its nearest existing parent when the folder
    does not exist yet."""
    from volrot.errors import UserError

    f = Path(folder)
    probe = f
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{label}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".volrot-write-probe.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        reason = os_error_reason(e) or (e.strerror or type(e).__name__)
        raise UserError(f"{label}: cannot write into {probe} ({reason})") from None
