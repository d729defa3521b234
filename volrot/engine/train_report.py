"""Terminal summary of a finished (or stopped) training run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from volrot.engine.train import TrainResult


def _fmt(x) -> str:
    return "–" if x is None or x != x else f"{x:.4f}"


def print_result(result: TrainResult, console: Console) -> None:
    m = result.metrics
    if not result.completed:
        console.print(
            f"stopped after epoch {m['epoch']} (best so far: epoch {m['best_epoch']}); "
            f"continue with: volrot train --resume {result.run_dir}"
        )
        return
    table = Table(title=f"epoch {m['best_epoch']} (best val AUC)")
    table.add_column("split", style="bold")
    table.add_column("ACC", justify="right")
    table.add_column("AUC", justify="right")
    table.add_column("loss", justify="right")
    for split in ("val", "test"):
        s = m[split]
        table.add_row(split, _fmt(s["acc"]), _fmt(s["auc"]), _fmt(s.get("loss")))
    console.print(table)
    console.print(f"run folder: [bold]{result.run_dir}[/]")
    console.print(f"checkpoint: {result.best_checkpoint}")
