"""Per-epoch training log of a run folder: metrics.jsonl, curves.png and TensorBoard events.

`EpochLog.append(record)` (rank 0, once per epoch) appends the record to `metrics.jsonl`,
redraws `curves.png` (loss, ACC and AUC of train and val against the epoch, from every line of
metrics.jsonl, so a resumed run's figure shows all its epochs) and, when the optional
`tensorboard` package is installed (`pip install "volrot[tensorboard]"`), writes the same
scalars as TensorBoard events under `<run>/tensorboard/` (`tensorboard --logdir runs/`).
Without tensorboard that last part is skipped silently; nothing else changes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from volrot.engine.resume import logged_epochs
from volrot.fileio import atomic_write

#: (panel title, metrics.jsonl key of train, of val)
PANELS = (("loss", "train_loss", "val_loss"), ("ACC", "train_acc", "val_acc"), ("AUC", "train_auc", "val_auc"))


def summary_writer_class():
    """TensorBoard's `SummaryWriter`, or None when the `tensorboard` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard needs the tensorboard package
        return None
    return SummaryWriter


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Write `path` (PNG): one panel per metric, train and val against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def series(key):
        pts = [(r["epoch"], r.get(key)) for r in records]
        return [e for e, v in pts if _finite(v)], [v for _, v in pts if _finite(v)]

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2), constrained_layout=True)
    fig.suptitle("train: running values over the epoch's batches (augmented, train mode); val: after the epoch", fontsize=9)
    for ax, (title, train_key, val_key) in zip(axes, PANELS):
        for key, label, style in ((train_key, "train", "o-"), (val_key, "val", "s-")):
            x, y = series(key)
            if x:
                ax.plot(x, y, style, label=label, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if title != "loss":
            ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="best", fontsize=8)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class EpochLog:
    """The per-epoch log files of one run folder (write from rank 0 only)."""

    def __init__(self, run_dir: Path, *, curves: bool = True, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.curves = curves
        self.writer = None
        if tensorboard:
            cls = summary_writer_class()
            if cls is not None:
                self.writer = cls(log_dir=str(self.run_dir / "tensorboard"))

    def append(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.curves:
            plot_curves(logged_epochs(self.run_dir), self.run_dir / "curves.png")
        if self.writer is not None:
            for _, train_key, val_key in PANELS:
                for key in (train_key, val_key):
                    if _finite(record.get(key)):
                        self.writer.add_scalar(key.replace("_", "/", 1), record[key], record["epoch"])
            self.writer.add_scalar("lr", record["lr"], record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
