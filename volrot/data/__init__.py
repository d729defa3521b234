"""Data sources. `load_data(cfg)` turns a `DataConfig` into a `DataBundle` of three splits.

Names:
- `shapes`: the built-in generated dataset (offline; `volrot.data.synthetic`).
- MedMNIST3D: `organ|nodule|adrenal|fracture|vessel|synapse` or the full `nodulemnist3d` names.
- `nifti:PATH` / `dicom:PATH`: a CSV manifest or a folder with one subfolder per class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volrot.config import canonical_name
from volrot.errors import UserError

if TYPE_CHECKING:
    from volrot.config import DataConfig
    from volrot.data.base import ArrayDataset, DataBundle


def __getattr__(name: str):
    # Lazy: `volrot.data.preprocess` (used by the torch-free ONNX `predict` path) must be
    # importable without importing torch, which `volrot.data.base` needs.
    if name in ("ArrayDataset", "DataBundle"):
        from volrot.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'volrot.data' has no attribute {name!r}")


__all__ = ["ArrayDataset", "DataBundle", "load_data", "canonical_name"]

SYNTHETIC_NAMES = ("shapes",)


def load_data(cfg: DataConfig) -> DataBundle:
    name = cfg.name.strip()
    low = name.lower()
    if low in SYNTHETIC_NAMES:
        from volrot.data.synthetic import load_shapes

        return load_shapes(cfg)
    if low.startswith("nifti:") or low.startswith("dicom:"):
        from volrot.data.volumes import load_volumes

        return load_volumes(cfg, low.split(":", 1)[0])
    from volrot.data.medmnist import SHORT_NAMES, medmnist_flag

    if medmnist_flag(low) is not None:
        from volrot.data.medmnist import load_medmnist

        return load_medmnist(cfg)
    known = ", ".join((*SYNTHETIC_NAMES, *SHORT_NAMES, "nifti:PATH", "dicom:PATH"))
    raise UserError(f"unknown dataset '{name}' (known: {known})")
