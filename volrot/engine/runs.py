"""`volrot runs [DIR]`: the run folders under DIR as a table (no torch, files only).

A run folder is a folder holding `recipe.yaml`. Per run: arch and dataset (recipe.yaml), epochs
trained of those planned (metrics.jsonl), the best epoch and the test ACC/AUC (metrics.json,
written when the run finished), the rotated ACC/AUC of the newest eval-rotated report in the
run folder (`*/report.json` from `volrot eval-rotated`; the Haar protocol when present, else
so3-grid, axes, octahedral) and the training time (sum of the epochs' seconds).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from volrot.engine.resume import logged_epochs
from volrot.errors import UserError

ROTATED_PREFERENCE = ("haar", "so3-grid", "axes", "octahedral")


@dataclass
class RunSummary:
    path: Path
    arch: str
    data: str
    epochs_done: int
    epochs: int | None
    finished: bool
    best_epoch: int | None
    test_acc: float | None
    test_auc: float | None
    rotated: str | None  # protocol name of the rotated metrics
    rotated_acc: float | None
    rotated_auc: float | None
    seconds: float


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _rotated(run: Path) -> tuple[str | None, float | None, float | None]:
    reports = [p for p in run.glob("*/report.json") if p.is_file()]
    reports += [p for p in run.glob("*/*/report.json") if p.is_file()]
    for path in sorted(reports, key=lambda p: p.stat().st_mtime, reverse=True):
        rep = _read_json(path)
        protocols = rep.get("protocols") if isinstance(rep, dict) else None
        if not isinstance(protocols, dict):
            continue
        for name in ROTATED_PREFERENCE:
            s = protocols.get(name)
            if isinstance(s, dict):
                return name, _number(s.get("acc_mean")), _number(s.get("auc_mean"))
    return None, None, None


def summarize_run(run: Path) -> RunSummary:
    try:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        recipe = {}
    recipe = recipe if isinstance(recipe, dict) else {}
    section = lambda k: recipe.get(k) if isinstance(recipe.get(k), dict) else {}  # noqa: E731
    records = logged_epochs(run)
    final = _read_json(run / "metrics.json")
    final = final if isinstance(final, dict) else {}
    test = final.get("test") if isinstance(final.get("test"), dict) else {}
    epochs = section("train").get("epochs")
    name, r_acc, r_auc = _rotated(run)
    return RunSummary(
        path=run,
        arch=str(section("model").get("arch", "?")),
        data=str(section("data").get("name", "?")),
        epochs_done=len(records),
        epochs=epochs if isinstance(epochs, int) else None,
        finished=bool(final),
        best_epoch=final.get("best_epoch") if isinstance(final.get("best_epoch"), int) else None,
        test_acc=_number(test.get("acc")),
        test_auc=_number(test.get("auc")),
        rotated=name,
        rotated_acc=r_acc,
        rotated_auc=r_auc,
        seconds=sum(_number(r.get("seconds")) or 0.0 for r in records),
    )


def list_runs(folder: str | Path = "runs") -> list[RunSummary]:
    """The run folders directly under `folder` (or `folder` itself if it is one), oldest first."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (runs are written under train.out, default runs/)")
    runs = [root] if (root / "recipe.yaml").is_file() else [p for p in root.iterdir() if (p / "recipe.yaml").is_file()]
    return [summarize_run(p) for p in sorted(runs, key=lambda p: (p.stat().st_mtime, p.name))]


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def print_runs(runs: list[RunSummary], console, folder: str | Path) -> None:
    if not runs:
        console.print(f"no runs in {folder}", highlight=False)
        return
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from volrot.progress import format_seconds

    table = Table(
        title=f"runs in {folder}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption="epochs: trained/planned (best epoch); rot.: the newest eval-rotated report in the run folder "
        "(haar protocol, else so3-grid, axes, octahedral)",
    )
    table.add_column("run / arch · data", overflow="fold")
    for col in ("epochs", "test ACC", "AUC", "rot. ACC", "AUC", "time"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in runs:
        epochs = f"{r.epochs_done}/{r.epochs if r.epochs is not None else '?'}"
        if r.best_epoch is not None:
            epochs += f" ({r.best_epoch})"
        table.add_row(
            f"{escape(r.path.name)}\n[dim]{escape(r.arch)} · {escape(r.data)}[/]", epochs, _f(r.test_acc), _f(r.test_auc), _f(r.rotated_acc),
            _f(r.rotated_auc), format_seconds(r.seconds),
        )  # fmt: skip
    console.print(table)
