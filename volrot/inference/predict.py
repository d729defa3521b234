"""Files -> class probabilities: the `volrot predict` command and the clinicians' Python API.

    from volrot import load_model                 # a checkpoint (torch)
    model = load_model("runs/<run>/best.safetensors")
    model.predict("scan.nii.gz")                   # {"label": ..., "probabilities": {...}, ...}

    from volrot.inference import OnnxModel        # an ONNX export (onnxruntime + numpy; no torch)
    OnnxModel("model.onnx").predict("dicom/series_folder/")

Inputs and preprocessing: `volrot.inference.inputs`. This module imports torch only for
checkpoints (lazily): the ONNX path runs without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.special import softmax

from volrot.errors import UserError
from volrot.inference.inputs import InputPipeline, find_inputs
from volrot.inference.results import PredictReport, error_text, make_row
from volrot.inference.tta import tta_views
from volrot.so3.groups import rotate_exact
from volrot.inference.writers import check_output_path, write_predictions


# --- models: a checkpoint (torch) or an ONNX export (onnxruntime) ---------------------------------


class Predictor:
    """A volrot checkpoint loaded for inference (what `volrot.load_model` returns).

    `predictor.model` is the `nn.Module` in eval mode, `predictor.card` the checkpoint's model
    card (`volrot.artifacts.card.ModelCard`: arch, class names, input, preprocessing, recipe,
    metrics) and `predictor.meta` the same as a dict. `predictor(x)` maps a float32 array
    `(B, C, D, H, W)` to logits `(B, K)` (numpy; NaN or infinite logits are a `UserError`);
    `predictor.predict(path)` classifies a NIfTI file or DICOM series folder with the recorded
    preprocessing."""

    def __init__(self, model, card, device=None, path: str | Path | None = None):
        import torch

        self.model = model
        self.card = card
        self.meta = card.to_dict()
        self.path = Path(path) if path is not None else None
        self.device = device if device is not None else next(iter(model.parameters()), torch.zeros(0)).device

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        from volrot.artifacts.onnx_runtime import check_finite_logits

        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        logits = out.float().cpu().numpy()
        where = str(self.path) if self.path is not None else "model"
        self.card.check_output_width(logits.shape[-1], where)
        check_finite_logits(logits, where)
        return logits

    def predict(self, path: str | Path, tta: str = "none") -> dict[str, Any]:
        return predict_one(self, path, tta=tta)


def load_model(path: str | Path, device: str = "cpu") -> Predictor:
    """Load a volrot checkpoint (`.safetensors`) for inference; see `Predictor`."""
    from volrot.artifacts.checkpoint import load_checkpoint
    from volrot.device import resolve_device

    dev = resolve_device(str(device))
    model, card = load_checkpoint(path, device=dev)
    return Predictor(model, card, dev, path)


class OnnxModel:
    """A volrot ONNX export run with onnxruntime; needs numpy, nibabel and SimpleITK, not torch.

    `model(x)` maps a float32 array `(B, C, D, H, W)` to logits `(B, K)`;
    `model.predict(path)` does what `load_model(ckpt).predict(path)` does for a checkpoint.
    `model.card` is the export's model card, `model.meta` the same as a dict."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        from volrot.artifacts.onnx_runtime import OnnxSession

        self._session = OnnxSession(path, device=device)
        self.path = Path(path)
        self.card = self._session.card
        self.meta = self._session.meta

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._session(x)

    def predict(self, path: str | Path, tta: str = "none") -> dict[str, Any]:
        return predict_one(self, path, tta=tta)


def _runner(model) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(model, (OnnxModel, Predictor)):
        return model
    raise TypeError("model must come from volrot.load_model or volrot.inference.OnnxModel")


def open_model(path: str | Path, device: str = "auto"):
    """A checkpoint (`.safetensors`, via `volrot.load_model`) or an ONNX export, by content."""
    from volrot.artifacts.safety import sniff

    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file not found: {p}")
    kind = sniff(p)
    if kind == "safetensors":
        return load_model(p, device=device)
    if kind == "pickle":
        raise UserError(f"{p}: a Python pickle, not a volrot checkpoint or ONNX model; refusing to load it (pickles can run code)")
    if kind == "zip":
        raise UserError(
            f"{p}: a TorchScript/pt2 archive; `volrot predict` takes a checkpoint (.safetensors) or an ONNX export "
            "(volrot.artifacts.export.load_artifact loads TorchScript/pt2 in Python)"
        )
    return OnnxModel(p, device=device)


# --- prediction -----------------------------------------------------------------------------------


def _probabilities(run, arrays: list[np.ndarray], views: list, batch_size: int) -> np.ndarray:
    """Softmax probabilities per array, averaged over the TTA views (if any)."""
    volumes = [rotate_exact(a, g) for a in arrays for g in views] if views else list(arrays)
    per = max(1, len(views))
    probs = []
    for i in range(0, len(volumes), max(1, batch_size)):
        probs.append(softmax(run(np.stack(volumes[i : i + batch_size])), axis=-1))
    p = np.concatenate(probs).reshape(len(arrays), per, -1).mean(axis=1)
    return p


def predict_one(model, path: str | Path, tta: str = "none") -> dict[str, Any]:
    """Predict one NIfTI file or DICOM series folder: {"label", "probabilities", "path",
    "preprocessing"}. A bad input raises `UserError` naming the file."""
    run = _runner(model)
    card = run.card
    pipeline = InputPipeline(card)
    views = tta_views(tta, pipeline.input_shape)
    p = Path(path)
    if not p.exists():
        raise UserError(f"input not found: {p}")
    array, summary = pipeline.load(p)
    probs = _probabilities(run, [array], views, batch_size=len(views) or 1)[0]
    row = make_row(p, list(card.class_names), probs, {**summary, "tta": tta}, None)
    row.pop("error")
    return row


def predict_files(
    model: str | Path,
    inputs: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    tta: str = "none",
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = False,
    console=None,
) -> PredictReport:
    """Predict every input; a bad input gives a row with `error` set and the others go on.

    The output file (CSV or JSON by suffix) is written atomically once all rows exist, so it is
    always complete. The caller decides the exit status from `report.errors`."""
    out_path = check_output_path(out)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    run = open_model(model, device=device)
    card = run.card
    class_names = list(card.class_names)
    pipeline = InputPipeline(card)
    views = tta_views(tta, pipeline.input_shape)
    files = find_inputs(inputs)
    if not files:
        raise UserError("no inputs: give NIfTI files, DICOM series folders, or folders holding them")
    rows: list[dict[str, Any]] = [None] * len(files)  # type: ignore[list-item]

    bar = _progress(progress and len(files) > 1, console)
    task = bar.add_task("predict", total=len(files)) if bar else None
    try:
        if bar:
            bar.start()
        for start in range(0, len(files), batch_size):
            chunk = list(range(start, min(start + batch_size, len(files))))
            ready: list[tuple[int, np.ndarray, dict]] = []
            for i in chunk:
                try:
                    if not files[i].exists():
                        raise UserError(f"input not found: {files[i]}")
                    array, summary = pipeline.load(files[i])
                    ready.append((i, array, {**summary, "tta": tta}))
                except Exception as e:  # one bad input never stops the batch
                    rows[i] = make_row(files[i], class_names, None, None, error_text(e))
            if ready:
                try:
                    probs = _probabilities(run, [a for _, a, _ in ready], views, batch_size)
                    for (i, _, summary), p in zip(ready, probs):
                        rows[i] = make_row(files[i], class_names, p, summary, None)
                except Exception as e:
                    for i, _, summary in ready:
                        rows[i] = make_row(files[i], class_names, None, summary, f"model failed on this batch: {error_text(e)}")
            if bar:
                bar.update(task, advance=len(chunk))
    finally:
        if bar:
            bar.stop()

    report = PredictReport(
        rows=rows,
        class_names=class_names,
        model={"path": str(model), "arch": card.arch, "format": card.format, "input_shape": list(pipeline.input_shape)},
        out=out_path,
        tta=tta,
        preprocessing=pipeline.describe(),
    )
    if out_path is not None:
        write_predictions(report, out_path)
    return report


def _progress(enabled: bool, console):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
