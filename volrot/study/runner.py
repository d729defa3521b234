"""`volrot study`: train and evaluate every (model, seed) cell of a study, then report.

`run_study(spec, study_dir, shard=(i, N))` goes through the cells of shard i (all cells when
`shard` is None) in order: a finished cell is skipped, an interrupted training is resumed
(`volrot.engine.train.train(resume=...)`), a trained cell without a current rotated evaluation
is evaluated (`volrot.engine.eval_rotated.evaluate_checkpoint`). Every state check happens before
anything runs, so a study folder holding a cell trained with another recipe stops the study
with one line and nothing done. At the end the report is written over every finished cell of
the study (also the cells of other shards).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volrot.errors import UserError
from volrot.fileio import atomic_write_text
from volrot.study.cells import (
    EVAL_DIR,
    EVAL_OPTIONS,
    Cell,
    cell_state,
    clear_empty_start,
    comparable_eval_options,
    plan_cells,
    shard_cells,
)
from volrot.study.spec import STUDY_FILE, StudySpec


@dataclass
class StudyRun:
    study_dir: Path
    cells: list[Cell]  # every cell of the study
    ran: list[Cell]  # the cells of this shard
    actions: dict[str, str] = field(default_factory=dict)  # cell name -> what was done
    seconds: dict[str, float] = field(default_factory=dict)  # cell name -> wall time this call
    report: Any = None  # volrot.study.results.StudyResults
    paths: dict[str, Path] = field(default_factory=dict)


def default_study_dir(spec: StudySpec) -> Path:
    return Path("runs") / f"study-{spec.name}"


def prepare_study_dir(spec: StudySpec, study_dir: Path) -> None:
    """Create the study folder with `study.yaml`, or check an existing one holds the same study."""
    f = study_dir / STUDY_FILE
    if f.is_file():
        import yaml

        try:
            found = yaml.safe_load(f.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            found = None
        if not isinstance(found, dict) or found.get("name") != spec.name:
            raise UserError(f"{study_dir} holds another study (see {f}); use another --out")
        # Changed model entries are caught cell by cell (recipe comparison); the file follows the spec.
    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f, spec.to_yaml())


def run_study(
    spec: StudySpec,
    study_dir: str | Path | None = None,
    *,
    shard: tuple[int, int] | None = None,
    report_only: bool = False,
    progress: bool = True,
    console=None,
) -> StudyRun:
    """Run (shard of) a study and write its report; see the module docstring."""
    from rich.console import Console

    console = console or Console()
    study_dir = Path(study_dir) if study_dir is not None else default_study_dir(spec)
    cells = plan_cells(spec, study_dir)
    mine = shard_cells(cells, shard)
    run = StudyRun(study_dir, cells, mine)
    if report_only:
        if not (study_dir / STUDY_FILE).is_file() and not study_dir.is_dir():
            raise UserError(f"--report-only: no study folder {study_dir}")
    else:
        states = {c.name: cell_state(c) for c in mine}  # every check before anything runs
        prepare_study_dir(spec, study_dir)
        for k, cell in enumerate(mine):
            state = states[cell.name]
            label = f"[{k + 1}/{len(mine)}] {cell.name}"
            if state == "finished":
                run.actions[cell.name] = "skipped (finished)"
                console.print(f"{label}: finished, skipped", highlight=False, soft_wrap=True)
                continue
            t0 = time.perf_counter()
            run.actions[cell.name] = _run_cell(cell, state, label, progress, console)
            run.seconds[cell.name] = time.perf_counter() - t0
    from volrot.study.report import write_study_report
    from volrot.study.results import collect_study

    results = collect_study(spec, study_dir, cells)
    run.report = results
    if results.models:
        run.paths = write_study_report(results, study_dir)
    return run


def _run_cell(cell: Cell, state: str, label: str, progress: bool, console) -> str:
    from volrot.engine.eval_rotated import evaluate_checkpoint
    from volrot.engine.train import train

    done = []
    if state in ("new", "empty-start", "partial"):
        if state == "empty-start":
            clear_empty_start(cell)
        epochs = cell.recipe.train.epochs
        if state == "partial":
            console.print(f"{label}: resuming the interrupted training ({epochs} epochs in all)", highlight=False, soft_wrap=True)
            result = train(None, resume=cell.run_dir, progress=progress, console=console)
            done.append("resumed training")
        else:
            console.print(f"{label}: training {cell.recipe.model.arch} ({epochs} epochs, seed {cell.seed})", highlight=False, soft_wrap=True)
            result = train(cell.recipe, progress=progress, console=console)
            done.append("trained")
        if not result.completed:  # pragma: no cover - train() only stops early when asked to
            raise UserError(f"{cell.run_dir}: training stopped before its last epoch")
        test = result.metrics["test"]
        console.print(
            f"{label}: test ACC {test['acc']:.3f} AUC {test['auc']:.3f} "
            f"(best epoch {result.metrics['best_epoch']}, {result.metrics['train_seconds']:.0f} s)",
            highlight=False, soft_wrap=True,
        )
    protocols = cell.eval.get("protocols", "all")
    console.print(f"{label}: rotated evaluation ({', '.join(protocols) if isinstance(protocols, list) else protocols})", highlight=False, soft_wrap=True)
    folder = cell.run_dir / EVAL_DIR
    (folder / EVAL_OPTIONS).unlink(missing_ok=True)  # the marker goes last: a crash leaves no stale one
    # the study owns the folder: a stale evaluation in it is replaced (force)
    report, _ = evaluate_checkpoint(cell.run_dir / "best.safetensors", out=folder, force=True, progress=progress, **cell.eval)
    atomic_write_text(folder / EVAL_OPTIONS, json.dumps(comparable_eval_options(cell.eval), indent=2, sort_keys=True, default=str))
    summary = ", ".join(
        f"{name} {s['acc_mean']:.3f}" for name, s in report.protocols.items() if s.get("acc_mean") is not None
    )
    console.print(
        f"{label}: unrotated ACC {report.reference['acc']:.3f}; {summary} ({report.meta['elapsed_s']:.0f} s)",
        highlight=False, soft_wrap=True,
    )
    done.append("evaluated")
    return ", ".join(done)
