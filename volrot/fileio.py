"""Atomic file writes (torch-free, so the ONNX prediction path can use them).

`atomic_write(path, write)` calls `write(tmp)` on a temporary file in the same folder, fsyncs it
and renames it onto `path`; if `write` raises, the temporary file is removed and `path` is left
as it was. A reader therefore never sees a half-written file.

`os_error_reason` names the errors the file system gives (disk full, read-only, permission
denied...) so that callers can report them in one line; `check_writable_folder` probes an
output folder before any work is done. `write_report_dir` writes a report folder whole (a new
`<date>-<time>` folder by default; an existing folder holding files only with `force`).
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


# --- report folders: never overwrite a report without being asked --------------------------------


def check_report_dir(out: str | Path | None, *, force: bool = False, option: str = "--out") -> None:
    """Refuse an `out` folder that already holds files unless `force` (checked before any work)."""
    if out is None:
        return
    from volrot.errors import UserError

    o = Path(out)
    if o.exists() and not o.is_dir():
        raise UserError(f"{option} {o}: is a file, not a folder")
    if o.is_dir() and any(o.iterdir()) and not force:
        raise UserError(f"{option} {o}: folder exists and is not empty; pass --force to overwrite its report, or choose another folder")


def _stamp() -> str:
    from datetime import datetime

    return datetime.now().strftime("%Y%m%d-%H%M%S")


def write_report_dir(write, *, out: str | Path | None, default_parent: str | Path, force: bool = False) -> dict[str, Path]:
    """Write a report folder atomically; returns name -> path of the files written.

    `write(folder)` writes the report's files directly into `folder` and returns name -> path.
    It runs in a hidden temporary folder that is renamed into place at the end, so a failed
    report leaves nothing behind and a reader never sees half a report.

    - `out=None`: a new folder `default_parent/<YYYYmmdd-HHMMSS>` (`-2`, `-3`... when that
      name is taken); earlier reports are never touched.
    - `out` missing or empty: the report becomes that folder.
    - `out` holding files: an error unless `force`; with `force` the report's files replace
      their namesakes one by one (each rename atomic); other files in the folder are left alone.
    """
    import shutil

    check_report_dir(out, force=force)
    target = Path(out) if out is not None else Path(default_parent) / _stamp()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        written = write(tmp)
        names = {k: Path(p).name for k, p in written.items()}
        for p in written.values():
            if Path(p).parent != tmp:
                raise RuntimeError(f"report writer wrote {p} outside its folder {tmp}")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if out is None:
            target = _rename_unique(tmp, target)
        elif target.is_dir() and any(target.iterdir()):
            for name in sorted(set(names.values())):
                os.replace(tmp / name, target / name)
            tmp.rmdir()
        else:
            os.replace(tmp, target)  # a missing or empty folder: one atomic rename
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {k: target / name for k, name in names.items()}


def _rename_unique(tmp: Path, target: Path) -> Path:
    """Rename `tmp` to `target`, or `target-2`, `target-3`... if a folder by that name holds files."""
    base = target
    for i in range(2, 1000):
        try:
            os.rename(tmp, target)  # onto a missing or empty folder only
            return target
        except OSError:
            if not target.exists():
                raise
            target = base.with_name(f"{base.name}-{i}")
    raise RuntimeError(f"no free report folder name next to {base}")


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
