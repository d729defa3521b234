"""The cells of a study — one (model, seed) pair each, one ordinary run folder each — their
deterministic sharding, and what state a cell's folder is in.

Cell folder `<study>/<model>-seed<seed>/` is a `volrot train` run folder (recipe.yaml,
best.safetensors, metrics.json, train_state.safetensors ...) with the rotated evaluation in
`eval-rotated/` (report.json/csv/png, as `volrot eval-rotated` writes them) and
`eval-rotated/eval-options.json`, the evaluation options, written last: a report without it is
an unfinished evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from volrot.errors import UserError
from volrot.study.spec import (
    StudySpec,
    cell_name,
    cell_recipe,
    eval_options,
    recipe_difference,
)

EVAL_DIR = "eval-rotated"
EVAL_OPTIONS = "eval-options.json"
REPORT_FILES = ("report.json", "report.csv", "report.png")
#: files `volrot train` writes before its first epoch ends; a folder holding only these is a
#: run that was interrupted before it had anything to resume
_PRE_EPOCH_FILES = {"recipe.yaml", "data.json", "metrics.jsonl"}



@dataclass
class Cell:
    model: str
    seed: int
    index: int  # position in the study's cell order
    run_dir: Path
    recipe: Any  # volrot.config.Recipe
    eval: dict[str, Any]  # evaluate_checkpoint keyword arguments

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def report_path(self) -> Path:
        return self.run_dir / EVAL_DIR / "report.json"


def plan_cells(spec: StudySpec, study_dir: Path) -> list[Cell]:
    """All cells in a fixed order: models in file order, each with its seeds in file order."""
    cells = []
    for model in spec.models:
        for seed in spec.seeds:
            recipe = cell_recipe(spec, model, seed, study_dir)
            run_dir = study_dir / cell_name(model.name, seed)
            cells.append(Cell(model.name, seed, len(cells), run_dir, recipe, eval_options(spec, recipe)))
    return cells


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`"i/N"` (0 <= i < N) -> (i, N); None stays None."""
    if text is None:
        return None
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise UserError(f"--shard must look like i/N (e.g. 0/4), got '{text}'") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard i/N needs 0 <= i < N, got '{text}'")
    return i, n


def shard_cells(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """Shard i of N: the cells whose index is i modulo N (round robin over the cell order, so a
    shard gets a mix of models; the union over i = 0..N-1 is every cell exactly once)."""
    if shard is None:
        return list(cells)
    i, n = shard
    return [c for c in cells if c.index % n == i]


def cell_state(cell: Cell) -> str:
    """`new` (no folder), `empty-start` (interrupted before its first epoch ended), `partial`
    (resumable training), `trained` (training done, evaluation missing or stale) or `finished`.

    A folder trained with another recipe than the study's is a `UserError` naming the key.
    """
    d = cell.run_dir
    if not d.exists() or (d.is_dir() and not any(d.iterdir())):
        return "new"
    if not d.is_dir():
        raise UserError(f"{d}: exists and is not a folder")
    found = _recorded_recipe(d)
    if found is not None:
        diff = recipe_difference(cell.recipe.to_dict(), found)
        if diff is not None:
            raise UserError(
                f"{d}: this cell was trained with another recipe ({diff}); "
                "use another study folder (--out) or delete that cell's folder"
            )
    if not (d / "metrics.json").is_file() or not (d / "best.safetensors").is_file():
        if (d / "train_state.safetensors").is_file():
            return "partial"
        names = {p.name for p in d.iterdir() if not _is_temp(p)}
        if names <= _PRE_EPOCH_FILES:
            return "empty-start"
        raise UserError(f"{d}: not a run folder this study can continue (no train_state.safetensors)")
    return "finished" if eval_is_current(cell) else "trained"


def _recorded_recipe(run_dir: Path) -> dict[str, Any] | None:
    p = run_dir / "recipe.yaml"
    if not p.is_file():
        return None
    try:
        found = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise UserError(f"{p}: not valid YAML") from None
    return found if isinstance(found, dict) else None


def comparable_eval_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options that change the numbers (defaults filled in; not the device or batch size)."""
    from volrot.study.spec import eval_parameters

    full = {**eval_parameters(), **options}
    return {k: v for k, v in sorted(full.items()) if k not in ("device", "batch_size")}


def eval_is_current(cell: Cell) -> bool:
    """The cell's report files exist and were made with the study's evaluation options."""
    folder = cell.run_dir / EVAL_DIR
    if not all((folder / f).is_file() for f in REPORT_FILES) or not (folder / EVAL_OPTIONS).is_file():
        return False
    try:
        recorded = json.loads((folder / EVAL_OPTIONS).read_text(encoding="utf-8"))
        json.loads(cell.report_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    from volrot.study.spec import eval_parameters

    # an option eval-rotated gained after the cell was evaluated counts at its default value
    defaults = _jsonable(eval_parameters())
    recorded, expected = _jsonable(recorded), _jsonable(comparable_eval_options(cell.eval))
    return all(recorded.get(k, defaults.get(k)) == v for k, v in expected.items())


def _jsonable(d: dict[str, Any]) -> Any:
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def clear_empty_start(cell: Cell) -> None:
    """Remove what a run interrupted before its first epoch left (only files `train` writes then)."""
    for p in cell.run_dir.iterdir():
        if (p.name in _PRE_EPOCH_FILES or _is_temp(p)) and p.is_file():
            p.unlink()


def _is_temp(p: Path) -> bool:
    """A temporary file of an atomic write that was killed (`.<name>.<random>.tmp`)."""
    return p.name.startswith(".") and p.name.endswith(".tmp")
