"""Data sources. `load_data(cfg)` turns a `DataConfig` into a `DataBundle` of three splits.

Names:
- `shapes`: the built-in generated dataset (offline; `volrot.data.synthetic`).
- MedMNIST3D: `organ|nodule|adrenal|fracture|vessel|synapse` or the full `nodulemnist3d` names.
- `nifti:PATH` / `dicom:PATH`: a CSV manifest or a folder with one subfolder per class.
"""

from __future__ import annotations

from volrot.config import DataConfig
from volrot.data.base import ArrayDataset, DataBundle
from volrot.errors import UserError

__all__ = ["ArrayDataset", "DataBundle", "load_data", "canonical_name"]

SYNTHETIC_NAMES = ("shapes",)


def canonical_name(name: str) -> str:
    """Short name used for recipe lookup: 'nodulemnist3d' -> 'nodule', 'nifti:x' -> 'nifti'."""
    n = name.strip()
    low = n.lower()
    if low.startswith(("nifti:", "dicom:")):
        return low.split(":", 1)[0]
    if low.endswith("mnist3d"):
        return low[: -len("mnist3d")]
    return low


def load_data(cfg: DataConfig) -> DataBundle:
    name = cfg.name.strip()
    low = name.lower()
    if low in SYNTHETIC_NAMES:
        from volrot.data.synthetic import load_shapes

        return load_shapes(cfg)
    if low.startswith("nifti:") or low.startswith("dicom:"):
        raise UserError(f"--data {name}: NIfTI/DICOM sources are not built yet")
    raise UserError(f"unknown dataset '{name}' (built in: shapes)")
