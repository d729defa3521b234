"""`volrot train --resume RUN [--epochs N]`: what a run folder holds and where to continue.

- A run with `train_state.safetensors` continues after its last finished epoch.
- A run killed before its first epoch ended (only `recipe.yaml`, maybe `data.json`) restarts
  from epoch 1 in the same folder with its recorded recipe: no manual deletion needed.
- Temporary files of an interrupted atomic write (`.best.safetensors.XXXX.tmp` and the like)
  are removed first; only volrot's own file names in that run folder are touched.
- Without `--threads` (or `train.threads`, or `OMP_NUM_THREADS`) the run continues with the
  thread count of its last epoch, so that it reproduces the uninterrupted run exactly.
- `--epochs N` extends (or shortens, down to the epochs already trained) the run. The learning
  rate schedule is not re-derived: milestones stay fractions of the original epoch count
  (`optim.schedule_epochs`, recorded in the recipe), so the epochs already trained keep their
  rates and the added epochs continue at the rate the original schedule ended with
  (PyTorch Lightning's behaviour when `max_epochs` is raised on resume).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volrot.config import Recipe, load_recipe_file, recipe_from_dict
from volrot.errors import UserError

STATE = "train_state.safetensors"
#: Files `volrot train` writes atomically into a run folder (their temp files may be left over).
OWN_FILES = (
    "best.safetensors", "last.safetensors", STATE, "metrics.json", "recipe.yaml", "data.json", "curves.png",
)  # fmt: skip


def stale_temp_files(run_dir: Path) -> list[Path]:
    """Leftover temporary files of volrot's atomic writes in `run_dir` (`.NAME.XXXX.tmp`)."""
    found = []
    for name in OWN_FILES:
        found += [p for p in run_dir.glob(f".{name}.*.tmp") if p.is_file() and not p.is_symlink()]
    return sorted(found)


def logged_epochs(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of `metrics.jsonl` (an unreadable last line is ignored)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "epoch" in rec:
            records.append(rec)
    return records


@dataclass
class ResumePoint:
    run_dir: Path
    recipe: Recipe
    state: tuple[dict, dict[str, Any]] | None  # (tensors, meta) of train_state; None: restart
    done: int  # epochs already trained
    threads: int | None  # CPU threads of the last logged epoch (a resume keeps them by default)
    finished: bool  # every epoch trained and the final metrics written: nothing to do
    removed: list[Path]  # stale temp files removed


def open_run(run_dir: str | Path, *, epochs: int | None = None, threads: int | None = None) -> ResumePoint:
    """Read the run folder `run_dir` for `--resume` (see the module docstring).

    Validation happens before anything is removed or written; torch is imported only when the
    folder has a train_state to read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such run folder")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise UserError(f"--epochs must be at least 1, got {epochs!r}")
    state_file = run_dir / STATE
    if state_file.is_file():
        from volrot.artifacts.checkpoint import read_tensors

        state = read_tensors(state_file)
        recipe = recipe_from_dict(state[1].get("recipe"), source=str(state_file))
        done = int(state[1]["epoch"])
    else:
        recipe_file = run_dir / "recipe.yaml"
        if not recipe_file.is_file():
            raise UserError(f"--resume {run_dir}: not a volrot run folder (no {STATE} and no recipe.yaml)")
        if logged_epochs(run_dir):
            raise UserError(f"--resume {run_dir}: epochs are logged in metrics.jsonl but {STATE} is missing")
        state, done = None, 0
        recipe = recipe_from_dict(load_recipe_file(recipe_file), source=str(recipe_file))
    if epochs is not None and epochs != recipe.train.epochs:
        if epochs < done:
            raise UserError(f"--epochs {epochs}: {run_dir} has already trained {done} epochs")
        if recipe.optim.schedule_epochs is None:
            recipe.optim.schedule_epochs = recipe.train.epochs
        recipe.train.epochs = epochs
    if threads is not None:
        recipe.train.threads = threads
    finished = done >= recipe.train.epochs and (run_dir / "metrics.json").is_file()
    removed = stale_temp_files(run_dir)
    for p in removed:
        p.unlink(missing_ok=True)
    logged = logged_epochs(run_dir)
    last_threads = logged[-1].get("threads") if logged else None
    last_threads = last_threads if isinstance(last_threads, int) and last_threads >= 1 else None
    return ResumePoint(
        run_dir=run_dir, recipe=recipe, state=state, done=done, threads=last_threads, finished=finished, removed=removed
    )
