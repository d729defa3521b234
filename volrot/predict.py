"""Files -> class probabilities: the `volrot predict` command and the clinicians' Python API.

    from volrot import load_model                 # a checkpoint (torch)
    model = load_model("runs/<run>/best.safetensors")
    model.predict("scan.nii.gz")                   # {"label": ..., "probabilities": {...}, ...}

    from volrot.predict import OnnxModel          # an ONNX export (onnxruntime + numpy; no torch)
    OnnxModel("model.onnx").predict("dicom/series_folder/")

Inputs are NIfTI files (`.nii`, `.nii.gz`) or DICOM series folders; a folder that holds no DICOM
files is searched for NIfTI files and series folders (recursively).

**Preprocessing** is the one recorded in the model's metadata, applied by the data layer
(`volrot.data.preprocess.preprocess_file`), never re-implemented here:

- `recorded`: the checkpoint was trained on NIfTI/DICOM volumes; the recorded `PreprocessSpec`
  (RAS reorientation, spacing, intensity window, size) is applied as in training.
- `as-is`: the checkpoint was trained on arrays without physical geometry (the built-in `shapes`
  set, MedMNIST3D): nothing records a spacing or an intensity window, so the file's voxel array
  is read (`load_volume`) and used in file voxel order, with only the recorded intensity
  mapping (MedMNIST: uint8 / 255; shapes: none). Its shape must equal the model's input size;
  anything else is an error for that file (no silent resampling or cropping).

Every output row says which mode was used (`preprocessing.mode`), with the size and spacing.

This module imports torch only for checkpoints (lazily): the ONNX path runs without torch.
"""

from __future__ import annotations

import csv
import io
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from volrot.errors import UserError

TTA_MODES = ("none", "octahedral")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
OUTPUT_SUFFIXES = (".csv", ".json")


# --- preprocessing: which pipeline a model's metadata asks for ----------------------------------


class InputPipeline:
    """Turns one input path into the model's input array `(C, D, H, W)` float32, as recorded."""

    def __init__(self, meta: dict[str, Any]):
        self.input_shape = tuple(int(s) for s in meta["input"]["shape"])
        recorded = meta.get("preprocessing") or {}
        self.trained_on = str((meta.get("data") or {}).get("name") or recorded.get("source") or "unknown data")
        self.spec = None
        self.source = str(recorded.get("source") or "unknown")
        # as-is intensity: MedMNIST volumes are uint8 scaled by 1/255 in training (recorded as
        # "uint8 / 255 -> [0, 1]"); generated `shapes` volumes are used unchanged.
        self.scale = 1.0 / 255.0 if self.source == "medmnist" else 1.0
        self.intensity = str(recorded.get("intensity") or "none") if self.source == "medmnist" else "unchanged"
        if recorded.get("source") == "volume":
            from volrot.data.preprocess import PreprocessSpec

            self.spec = PreprocessSpec.from_dict(recorded, where="checkpoint preprocessing")
        self.mode = "recorded" if self.spec is not None else "as-is"

    def describe(self) -> dict[str, Any]:
        """What the pipeline does, independent of the input file."""
        if self.spec is not None:
            s = self.spec
            return {
                "mode": "recorded",
                "size": list(s.size),
                "spacing_mm": list(s.spacing),
                "intensity": s.intensity,
                "orientation": "RAS",
                "interpolation_order": s.order,
            }
        return {
            "mode": "as-is",
            "size": list(self.input_shape[1:]),
            "intensity": self.intensity,
            "orientation": "file voxel order",
            "note": f"trained on {self.trained_on} without file preprocessing: voxels used unchanged, no resampling",
        }

    def load(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        if self.spec is not None:
            from volrot.data.preprocess import preprocess_file

            array = preprocess_file(path, self.spec)
            summary = self.describe()
        else:
            from volrot.data.preprocess import load_volume

            image = load_volume(path)
            array = np.asarray(image.array, dtype=np.float32)[None]
            if self.scale != 1.0:
                array = array * np.float32(self.scale)
            summary = {**self.describe(), "size": list(array.shape[1:]), "spacing_mm": [round(float(v), 6) for v in image.spacing]}
            if array.shape != self.input_shape:
                raise UserError(
                    f"{path}: volume is {_fmt(array.shape[1:])} voxels but this model takes {_fmt(self.input_shape[1:])} "
                    f"as-is (trained on {self.trained_on}, no file preprocessing recorded); resample it to "
                    f"{_fmt(self.input_shape[1:])} first, or use a model trained with data.preprocess"
                )
        array = np.asarray(array, dtype=np.float32)
        if array.shape != self.input_shape:
            raise UserError(f"{path}: preprocessed to {_fmt(array.shape)}, the model takes {_fmt(self.input_shape)}")
        return array, summary


def _fmt(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


# --- test-time augmentation on numpy arrays -------------------------------------------------------


def rotate_grid(x: np.ndarray, rotation) -> np.ndarray:
    """Apply a cube-group element (`volrot.so3.sampling.GridRotation`) to the last three axes of
    a numpy array exactly; same convention as `volrot.so3.volume.rotate_exact` (np.rot90 and
    torch.rot90 both turn the first axis of the pair towards the second)."""
    for op in rotation.ops:
        if op[0] == "rot90":
            _, k, (a, b) = op
            x = np.rot90(x, k, axes=(a - 3, b - 3))
        elif op[0] == "flip":
            x = np.flip(x, axis=op[1] - 3)
        else:  # pragma: no cover - ops are built in volrot.so3.sampling
            raise ValueError(f"unknown voxel op {op!r}")
    return np.ascontiguousarray(x)


def tta_views(tta: str, input_shape: Sequence[int]) -> list:
    """The rotations averaged over: [] for `none`, the 24 cube rotations for `octahedral`."""
    if tta not in TTA_MODES:
        raise UserError(f"--tta must be one of {', '.join(TTA_MODES)}, got '{tta}'")
    if tta == "none":
        return []
    if len(set(input_shape[-3:])) != 1:
        raise UserError(f"--tta octahedral needs a cubic input; this model takes {_fmt(input_shape[-3:])}")
    from volrot.so3.sampling import octahedral

    return octahedral()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --- models: a checkpoint (torch) or an ONNX export (onnxruntime) ---------------------------------


class _TorchRunner:
    """numpy in, numpy logits out, over a torch model in eval mode."""

    def __init__(self, model, device=None):
        import torch

        self.model = model
        self.device = device if device is not None else next(iter(model.parameters()), torch.zeros(0)).device
        self.meta = model.volrot_meta

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()


class OnnxModel:
    """A volrot ONNX export run with onnxruntime; needs numpy, nibabel and SimpleITK, not torch.

    `model(x)` maps a float32 array `(B, C, D, H, W)` to logits `(B, K)`;
    `model.predict(path)` does what `load_model(ckpt).predict(path)` does for a checkpoint.
    `model.volrot_meta` is the export's metadata (class names, preprocessing, metrics...)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        from volrot.onnx_runtime import OnnxSession

        self._session = OnnxSession(path, device=device)
        self.path = Path(path)
        self.volrot_meta = self._session.meta

    @property
    def meta(self) -> dict[str, Any]:
        return self.volrot_meta

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._session(x)

    def predict(self, path: str | Path, tta: str = "none") -> dict[str, Any]:
        return predict_one(self, path, tta=tta)


def _runner(model) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(model, (OnnxModel, _TorchRunner)):
        return model
    if hasattr(model, "volrot_meta"):
        return _TorchRunner(model)
    raise TypeError("model must come from volrot.load_model or volrot.predict.OnnxModel")


def open_model(path: str | Path, device: str = "auto"):
    """A checkpoint (`.safetensors`, via `volrot.load_model`) or an ONNX export, by content."""
    from volrot.artifact_safety import sniff

    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file not found: {p}")
    kind = sniff(p)
    if kind == "safetensors":
        from volrot.checkpoint import load_model
        from volrot.engine.train import resolve_device

        dev = resolve_device(device)
        return _TorchRunner(load_model(p, device=dev), dev)
    if kind == "pickle":
        raise UserError(f"{p}: a Python pickle, not a volrot checkpoint or ONNX model; refusing to load it (pickles can run code)")
    if kind == "zip":
        raise UserError(
            f"{p}: a TorchScript/pt2 archive; `volrot predict` takes a checkpoint (.safetensors) or an ONNX export "
            "(volrot.export.load_artifact loads TorchScript/pt2 in Python)"
        )
    return OnnxModel(p, device=device)


def bind_predict(model) -> None:
    """Give a model loaded by `volrot.load_model` its `model.predict(path, tta="none")` method."""
    model.predict = types.MethodType(predict_one, model)


# --- prediction -----------------------------------------------------------------------------------


def _probabilities(run, arrays: list[np.ndarray], views: list, batch_size: int) -> np.ndarray:
    """Softmax probabilities per array, averaged over the TTA views (if any)."""
    volumes = [rotate_grid(a, g) for a in arrays for g in views] if views else list(arrays)
    per = max(1, len(views))
    probs = []
    for i in range(0, len(volumes), max(1, batch_size)):
        probs.append(softmax(run(np.stack(volumes[i : i + batch_size]))))
    p = np.concatenate(probs).reshape(len(arrays), per, -1).mean(axis=1)
    return p


def _row(path: Path, class_names: list[str], probs: np.ndarray | None, summary: dict | None, error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"path": str(path), "label": None, "probability": None, "probabilities": {}, "preprocessing": summary or {}, "error": error}
    if probs is not None:
        k = int(np.argmax(probs))
        row["label"] = class_names[k]
        row["probability"] = float(probs[k])
        row["probabilities"] = {name: float(p) for name, p in zip(class_names, probs)}
    return row


def predict_one(model, path: str | Path, tta: str = "none") -> dict[str, Any]:
    """Predict one NIfTI file or DICOM series folder: {"label", "probabilities", "path",
    "preprocessing"}. A bad input raises `UserError` naming the file."""
    run = _runner(model)
    meta = run.meta
    pipeline = InputPipeline(meta)
    views = tta_views(tta, pipeline.input_shape)
    p = Path(path)
    if not p.exists():
        raise UserError(f"input not found: {p}")
    array, summary = pipeline.load(p)
    probs = _probabilities(run, [array], views, batch_size=len(views) or 1)[0]
    row = _row(p, list(meta["class_names"]), probs, {**summary, "tta": tta}, None)
    row.pop("error")
    return row


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(NIFTI_SUFFIXES)


def _holds_dicom(folder: Path) -> bool:
    for f in folder.iterdir():
        if f.is_file() and not f.name.startswith("."):
            if f.suffix.lower() == ".dcm":
                return True
            try:
                with open(f, "rb") as fh:
                    fh.seek(128)
                    if fh.read(4) == b"DICM":
                        return True
            except OSError:
                continue
    return False


def find_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Expand INPUT arguments: a file is used as given; a folder holding DICOM files is one
    series; any other folder is searched (sorted, recursively) for NIfTI files and series."""
    found: list[Path] = []

    def walk(folder: Path) -> None:
        if _holds_dicom(folder):
            found.append(folder)
            return
        for child in sorted(folder.iterdir()):
            if child.name.startswith("."):
                continue
            if child.is_dir():
                walk(child)
            elif _is_nifti(child):
                found.append(child)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            walk(p)
        else:
            found.append(p)  # a missing or unreadable file becomes an error row
    seen, unique = set(), []
    for p in found:
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


@dataclass
class PredictReport:
    rows: list[dict[str, Any]]
    class_names: list[str]
    model: dict[str, Any]
    out: Path | None = None
    tta: str = "none"
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["error"]]


def _error_text(e: BaseException) -> str:
    if isinstance(e, UserError):
        return str(e)
    return " ".join(f"{type(e).__name__}: {e}".split())


def check_output_path(out: str | Path | None) -> Path | None:
    if out is None:
        return None
    o = Path(out)
    if not o.name.lower().endswith(OUTPUT_SUFFIXES):
        raise UserError(f"--out {o}: must end in .csv or .json")
    if o.is_dir():
        raise UserError(f"--out {o}: is a folder")
    return o


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
    meta = run.meta
    class_names = list(meta["class_names"])
    pipeline = InputPipeline(meta)
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
                    rows[i] = _row(files[i], class_names, None, None, _error_text(e))
            if ready:
                try:
                    probs = _probabilities(run, [a for _, a, _ in ready], views, batch_size)
                    for (i, _, summary), p in zip(ready, probs):
                        rows[i] = _row(files[i], class_names, p, summary, None)
                except Exception as e:
                    for i, _, summary in ready:
                        rows[i] = _row(files[i], class_names, None, summary, f"model failed on this batch: {_error_text(e)}")
            if bar:
                bar.update(task, advance=len(chunk))
    finally:
        if bar:
            bar.stop()

    report = PredictReport(
        rows=rows,
        class_names=class_names,
        model={"path": str(model), "arch": meta.get("arch"), "format": meta.get("format"), "input_shape": list(pipeline.input_shape)},
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


CSV_FIXED = ("path", "label", "probability")


def predictions_csv(report: PredictReport) -> str:
    """One row per input: path, label, probability, p_<class>..., size, spacing_mm, preprocessing, error."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_FIXED, *(f"p_{c}" for c in report.class_names), "size", "spacing_mm", "preprocessing", "error"])
    for r in report.rows:
        pre = r["preprocessing"] or {}
        w.writerow(
            [
                r["path"],
                r["label"] or "",
                "" if r["probability"] is None else f"{r['probability']:.6g}",
                *("" if c not in r["probabilities"] else f"{r['probabilities'][c]:.6g}" for c in report.class_names),
                " ".join(str(v) for v in pre.get("size", [])),
                " ".join(f"{v:g}" for v in pre.get("spacing_mm", [])),
                pre.get("mode", ""),
                r["error"] or "",
            ]
        )
    return buf.getvalue()


def predictions_json(report: PredictReport) -> str:
    doc = {
        "model": report.model,
        "class_names": report.class_names,
        "tta": report.tta,
        "preprocessing": report.preprocessing,
        "predictions": report.rows,
        "errors": len(report.errors),
    }
    return json.dumps(doc, indent=2)


def write_predictions(report: PredictReport, out: str | Path) -> Path:
    from volrot.fileio import atomic_write_text

    out = Path(out)
    text = predictions_json(report) if out.name.lower().endswith(".json") else predictions_csv(report)
    atomic_write_text(out, text)
    return out
