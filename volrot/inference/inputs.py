"""Inputs of `volrot predict`: which files a path means, and how one becomes the model's input.

Inputs are NIfTI files (`.nii`, `.nii.gz`) or DICOM series folders; a folder that holds no
DICOM files is searched for NIfTI files and series folders (recursively). A folder given as an
input in which that search finds nothing stays in the list, and becomes an error row ("no NIfTI
file or DICOM series in FOLDER"): it is never dropped silently.

**Preprocessing** is the executable spec in the model card (`volrot.artifacts.card`), applied
by the data layer (`volrot.data.preprocess`), never re-derived here:

- `recorded`: the checkpoint was trained on NIfTI/DICOM volumes; the recorded `PreprocessSpec`
  (RAS reorientation, spacing, intensity window, size) is applied as in training.
- `as-is`: the checkpoint was trained on arrays without physical geometry (the built-in `shapes`
  set, MedMNIST3D): nothing records a spacing or an intensity window, so the file's voxel array
  is read (`load_volume`) and used in file voxel order, mapped by the recorded
  `value * scale + offset` (MedMNIST: scale 1/255; shapes: 1). Its shape must equal the model's
  input size; anything else is an error for that file (no silent resampling or cropping).

Every output row says which mode was used (`preprocessing.mode`), with the size and spacing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from volrot.errors import UserError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class InputPipeline:
    """Turns one input path into the model's input array `(C, D, H, W)` float32, as recorded."""

    def __init__(self, card):
        from volrot.artifacts.card import ModelCard, RecordedPreprocessing

        if not isinstance(card, ModelCard):
            card = ModelCard.from_dict(card, where="model metadata")
        self.card = card
        self.input_shape = card.input_shape
        self.trained_on = card.trained_on
        self.pre = card.preprocessing
        self.spec = self.pre.spec if isinstance(self.pre, RecordedPreprocessing) else None
        self.mode = self.pre.mode

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
            "intensity": _affine_text(self.pre.scale, self.pre.offset),
            "orientation": "file voxel order",
            "note": f"trained on {self.trained_on} without file preprocessing: voxels used unchanged, no resampling",
        }

    def load(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        if path.is_dir() and not _holds_dicom(path):
            raise UserError(f"no NIfTI file or DICOM series in {path}")
        if self.spec is not None:
            from volrot.data.preprocess import preprocess_file

            array = preprocess_file(path, self.spec)
            summary = self.describe()
        else:
            from volrot.data.preprocess import load_volume

            image = load_volume(path)
            array = self.pre.apply(image.array)[None]
            summary = {**self.describe(), "size": list(array.shape[1:]), "spacing_mm": [round(float(v), 6) for v in image.spacing]}
            if array.shape != self.input_shape:
                raise UserError(
                    f"{path}: volume is {fmt_shape(array.shape[1:])} voxels but this model takes {fmt_shape(self.input_shape[1:])} "
                    f"as-is (trained on {self.trained_on}, no file preprocessing recorded); resample it to "
                    f"{fmt_shape(self.input_shape[1:])} first, or use a model trained with data.preprocess"
                )
        array = np.asarray(array, dtype=np.float32)
        if array.shape != self.input_shape:
            raise UserError(f"{path}: preprocessed to {fmt_shape(array.shape)}, the model takes {fmt_shape(self.input_shape)}")
        return array, summary


def _affine_text(scale: float, offset: float) -> str:
    if scale == 1.0 and offset == 0.0:
        return "unchanged"
    inv = 1.0 / scale
    text = f"value / {inv:g}" if abs(inv - round(inv)) < 1e-9 else f"value * {scale:g}"
    return text + (f" + {offset:g}" if offset else "")


def fmt_shape(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


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
    series; any other folder is searched (sorted, recursively) for NIfTI files and series.
    A folder argument in which nothing is found is kept (loading it raises a `UserError`)."""
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
            before = len(found)
            walk(p)
            if len(found) == before:
                found.append(p)  # nothing in it: an error row, not a silent drop
        else:
            found.append(p)  # a missing or unreadable file becomes an error row
    seen, unique = set(), []
    for p in found:
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


