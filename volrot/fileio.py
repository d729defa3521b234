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
