"""The run folder of `volrot train`: a safe name, created atomically, removed again on failure.

- `train.name` is a name, not a path (`volrot.config.check_run_name`): no separators, no `.`/`..`,
  no control characters, at most `MAX_RUN_NAME_CHARS` characters.
- A run owns its folder once it has created the folder's first file, `recipe.yaml`, with
  `O_CREAT | O_EXCL` (after `os.mkdir`, or in an existing *empty* folder): two runs starting in
  the same instant never share a folder. An unnamed run takes `<arch>-<data>-<YYYYmmdd-HHMMSS>`,
  or the next free `-2`, `-3`...; a named run its name, or a one-line refusal.
- `os_failure` turns a file-system error during a run (disk full, read-only...) into one line,
  discarding a run folder that holds no finished epoch yet and keeping one that does.
- `discard()` removes what this run created and nothing else: the files it writes (by name) and
  the folders it made (`train.out` and its missing parents included), each only if then empty.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from volrot.errors import UserError
from volrot.fileio import check_writable_folder, os_error_reason

#: Files a run writes into its folder (the only ones `discard` removes).
RUN_FILES = (
    "recipe.yaml",
    "data.json",
    "metrics.jsonl",
    "best.safetensors",
    "last.safetensors",
    "train_state.safetensors",
    "metrics.json",
)
MAX_SUFFIX = 10_000


@dataclass
class RunFolder:
    path: Path
    made: list[Path] = field(default_factory=list)  # folders this run created, outermost first

    def discard(self) -> None:
        """Remove the run's own files and the folders it created (only those left empty)."""
        for name in RUN_FILES:
            try:
                (self.path / name).unlink()
            except FileNotFoundError:
                pass
            except OSError:
                return
        _remove_empty(self.made)


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` innermost first, stopping at the first that is not empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _claim(run: Path) -> list[Path] | None:
    """Own `run` by creating its first file exclusively (making the folder if needed): the
    folders made ([run] or []), or None when another run or user has it."""
    made = []
    try:
        os.mkdir(run)
        made = [run]
    except FileExistsError:
        if not run.is_dir() or any(run.iterdir()):  # a file, or a folder in use
            return None
    try:
        os.close(os.open(run / RUN_FILES[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:  # another run claimed it first
        return None
    return made


def _make_parents(out: Path) -> list[Path]:
    """Create `out` and its missing parents one by one; return those created (outermost first)."""
    missing = []
    p = out
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    made = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
            made.append(folder)
        except FileExistsError:
            if not folder.is_dir():
                raise
    return made


def create_run_folder(out: str | Path, name: str | None, base: str, now: datetime | None = None) -> RunFolder:
    """Create (exclusively) and return the run folder under `out` (see the module docstring).

    `name` is `train.name` (None: `<base>-<timestamp>`). Raises `UserError` (one line) when the
    folder cannot be created or the named one is taken; nothing is left behind then."""
    out = Path(out)
    check_writable_folder(out, f"--out {out}")
    made: list[Path] = []
    try:
        made = _make_parents(out)
        if name:
            run = out / name
            claimed = _claim(run)
            if claimed is None:
                if not run.is_dir():
                    raise UserError(f"run folder {run} exists and is a file (use another --name)")
                raise UserError(f"run folder {run} already exists and is not empty (use --resume {run} or another --name)")
            return RunFolder(run, [*made, *claimed])
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        stem = f"{base}-{stamp}"
        for i in range(1, MAX_SUFFIX + 1):
            run = out / (stem if i == 1 else f"{stem}-{i}")
            claimed = _claim(run)
            if claimed is not None:
                return RunFolder(run, [*made, *claimed])
        raise UserError(f"--out {out}: {MAX_SUFFIX} run folders named {stem}[-N] already exist; give --name")
    except OSError as e:
        _remove_empty(made)
        reason = os_error_reason(e)
        if reason is None:
            raise
        raise UserError(f"--out {out}: cannot create the run folder ({reason})") from None
    except UserError:
        _remove_empty(made)
        raise


def os_failure(e: OSError, claimed: list[RunFolder], resume) -> UserError | None:
    """One line for a file-system failure (disk full, read-only...); None if `e` is not one.

    A run folder this run created and that holds no finished epoch yet is removed; one that does
    is kept for `--resume`."""
    reason = os_error_reason(e)
    if reason is None:
        return None
    target = Path(str(e.filename)) if e.filename else None
    if target is not None:  # a temporary file of an atomic write: name the file it was for
        m = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", target.name)
        target = target.with_name(m.group(1)) if m else target
    run = claimed[0].path if claimed else (Path(resume) if resume is not None else None)
    writing = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)  # only writes fail so
    if target is not None:
        what = f"cannot write {target}" if writing else str(target)
    elif run is not None:
        what = f"cannot write into {run}" if writing else f"file-system error in {run}"
    else:
        what = "cannot write" if writing else "file-system error"
    if claimed and not (run / "train_state.safetensors").exists():
        claimed[0].discard()
        return UserError(f"{what}: {reason}; the run folder {run} was removed again")
    if run is not None:
        return UserError(f"{what}: {reason}; {run} keeps the last finished epoch (continue with --resume {run})")
    return UserError(f"{what}: {reason}")
