"""`volrot eval-rotated` as a library function: a checkpoint and its data in, report files out."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from volrot.device import resolve_device
from volrot.engine.checkpoint_data import check_split, checkpoint_split
from volrot.engine.rotated import RotatedReport, check_protocols, evaluate_rotated
from volrot.engine.rotated_report import write_report


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    root: str | None = None,
    split: str = "test",
    protocols: Sequence[str] | str = "all",
    angles: float = 30.0,
    n: int = 64,
    seed: int = 0,
    mask: str = "sphere",
    batch_size: int = 32,
    device: str = "auto",
    max_samples: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> tuple[RotatedReport, dict[str, Path]]:
    """`volrot eval-rotated`: load a checkpoint and its data, evaluate, write the report.

    The data are the checkpoint's recorded data config (`meta["recipe"]["data"]`) unless
    `data` (and/or `root`) is given; `split` picks train/val/test. `device="auto"` means CUDA when
    available. `out` defaults to `<checkpoint folder>/eval-rotated`. Returns the report and the
    paths of report.json, report.csv and report.png. Everything is checked before any file is
    written.
    """
    path = Path(checkpoint)
    check_split(split)
    check_protocols(protocols)
    extra = {"max_samples": max_samples} if max_samples is not None else {}
    loaded = checkpoint_split(path, split=split, data=data, root=root, **extra)
    model, meta, bundle = loaded.model, loaded.meta, loaded.bundle
    report = evaluate_rotated(
        model,
        loaded.dataset,
        task=bundle.task,
        protocols=protocols,
        angles=angles,
        n=n,
        seed=seed,
        mask=mask,
        device=resolve_device(str(device)),
        batch_size=batch_size,
        max_samples=max_samples,
        progress=progress,
    )
    report.meta = {
        "checkpoint": str(path),
        "model": meta.get("arch") or type(model).__name__,
        "data": bundle.name,
        "split": split,
        "class_names": list(bundle.class_names),
        **report.meta,
    }
    paths = write_report(report, Path(out) if out is not None else path.parent / "eval-rotated")
    return report, paths
