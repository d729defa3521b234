"""Tiny checkpoints, NIfTI files and DICOM series for the export/predict tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from volrot.artifacts.checkpoint import checkpoint_metadata, save_checkpoint
from volrot.models import create_model, model_defaults

# A tiny configuration per arch (seconds to export on a CPU); archs not listed use their defaults.
TINY = {
    "resnet3d": {"width": 2},
    "equilopo": {"channels": 1, "blocks": 1, "lmax": 1},
    "gcnn": {"width": 4},
    "gmr": {"width": 2, "kernel_sizes": [5, 5, 3, 3]},
    "steerable": {"width": 2, "lmax": 2, "blocks": 1, "kernel_size": 5},
}
SIZE = 16
CLASSES = ["benign", "malignant", "other"]


def tiny_options(arch: str) -> dict:
    known = model_defaults(arch)
    return {k: v for k, v in TINY.get(arch, {}).items() if k in known}


def volume_spec(size: int = SIZE) -> dict:
    """Recorded NIfTI/DICOM preprocessing: 2 mm voxels, CT window, `size`³."""
    from volrot.data.preprocess import PreprocessSpec

    return PreprocessSpec(size=(size,) * 3, spacing=(2.0, 2.0, 2.0), intensity="ct").to_dict()


def make_checkpoint(path: Path, arch: str = "resnet3d", *, preprocessing: dict | None = None, recipe: dict | None = None, seed: int = 0) -> Path:
    """An untrained tiny model saved like `volrot train` saves one (BN statistics randomised so
    that eval-mode outputs are not trivially equal across inputs)."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(CLASSES), in_channels=1, **tiny_options(arch))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    pre = preprocessing if preprocessing is not None else volume_spec()
    meta = checkpoint_metadata(
        model,
        class_names=CLASSES,
        input={"shape": [1, SIZE, SIZE, SIZE], "dtype": "float32"},
        data={"name": "nifti:test", "class_names": CLASSES, "preprocessing": pre},
        preprocessing=pre,
        recipe=recipe,
        metrics={"val": {"acc": 0.5, "auc": 0.6}, "test": {"acc": 0.4, "auc": 0.55}},
        epoch=1,
    )
    save_checkpoint(path, model, meta)
    return path


def ct_volume(seed: int, shape=(20, 18, 14)) -> np.ndarray:
    """HU-like values: soft tissue with a bright off-centre blob."""
    rng = np.random.default_rng(seed)
    a = rng.normal(40.0, 30.0, shape).astype(np.float32)
    a[3:8, 4:9, 2:6] += 300.0 + 50.0 * seed
    return a


def write_nifti(path: Path, data: np.ndarray, spacing=(1.5, 1.5, 2.5)) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([*spacing, 1.0])), str(path))
    return path


def write_dicom_series(folder: Path, data: np.ndarray, spacing=(1.5, 1.5, 2.5), uid_suffix: str = "1") -> Path:
    """`data` indexed (x, y, z) = (column, row, slice), written as int16 CT slices with SimpleITK."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.round(data).astype(np.int16).transpose(2, 1, 0))  # (z, y, x)
    img.SetSpacing(tuple(float(s) for s in spacing))
    uid = f"1.2.826.0.1.3680043.2.1125.{uid_suffix}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in (
            ("0008|0060", "CT"),
            ("0020|000e", uid),
            ("0020|000d", uid + ".9"),
            ("0008|0018", f"{uid}.{k + 1}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k)))),
            ("0020|0013", str(k + 1)),
            ("0028|1052", "0"),
            ("0028|1053", "1"),
        ):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(s)
    return folder
