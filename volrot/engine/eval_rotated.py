"""`volrot eval-rotated` as a library function: a checkpoint and its data in, report files out."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from volrot.device import resolve_device
from volrot.engine.checkpoint_data import check_split, checkpoint_split
from volrot.data.synthetic import pose_renderer
from volrot.engine.rotated import RotatedReport, check_protocols, evaluate_rotated
from volrot.engine.rotated_report import write_report
from volrot.errors import UserError
from volrot.fileio import check_report_dir, write_report_dir
from volrot.so3.resample import check_resample


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
    force: bool = False,
    progress: bool = False,
    resample: str = "trilinear",
) -> tuple[RotatedReport, dict[str, Path]]:
    """`volrot eval-rotated`: load a checkpoint and its data, evaluate, write the report.

    The data are the checkpoint's recorded data config (`meta["recipe"]["data"]`) unless
    `data` (and/or `root`) is given; `split` picks train/val/test. The `rendered` protocol needs
    the data to be `shapes` (its volumes are rendered again in each pose); `resample` is the path
    of the resampled rotations and of the control (trilinear | spline3). `device="auto"` means CUDA
    when available. `out` defaults to a new folder `<checkpoint folder>/eval-rotated/<YYYYmmdd-HHMMSS>`;
    an existing `out` that holds files is refused (before any work) unless `force`. The folder
    appears whole or not at all (`volrot.fileio.write_report_dir`). Returns the report and the
    paths of report.json, report.csv and report.png.
    """
    path = Path(checkpoint)
    check_split(split)
    rendered = "rendered" in check_protocols(protocols)
    check_resample(resample)
    if rendered and data is not None and data != "shapes":
        raise UserError(_not_renderable(data))
    check_report_dir(out, force=force)
    # the whole split: `max_samples` draws a class-stratified subset of it (evaluate_rotated)
    loaded = checkpoint_split(path, split=split, data=data, root=root)
    model, meta, bundle = loaded.model, loaded.meta, loaded.bundle
    renderer = None
    if rendered:
        if bundle.name != "shapes":
            raise UserError(_not_renderable(bundle.name))
        renderer = pose_renderer(bundle, split)
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
        resample=resample,
        renderer=renderer,
    )
    report.meta = {
        "checkpoint": str(path),
        "model": meta.get("arch") or type(model).__name__,
        "data": bundle.name,
        "split": split,
        "class_names": list(bundle.class_names),
        **report.meta,
    }
    paths = write_report_dir(
        lambda folder: write_report(report, folder), out=out, default_parent=path.parent / "eval-rotated", force=force
    )
    return report, paths


def _not_renderable(name: str) -> str:
    return (
        f"protocol 'rendered' needs data 'shapes' (only generated volumes can be rendered in a pose); "
        f"the data here is '{name}': use haar with --resample spline3"
    )
