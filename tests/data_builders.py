"""Small NIfTI files, DICOM series and manifests for the data-layer tests (tests/test_data_*.py)."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np

CT_ORIGIN = (-158.135803, -179.035797, -75.7)  # ImagePositionPatient of pydicom's CT_small.dcm


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def blob_volume(seed: int, shape=(12, 12, 12), label: int = 0) -> np.ndarray:
    """A noisy volume whose bright blob sits on the +x side for label 1 and -x for label 0."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.1, shape).astype(np.float32)
    x = shape[0] * (3 if label else 1) // 4
    a[x - 1 : x + 2, 4:8, 4:8] += 2.0
    return a


def ct_small_path() -> str:
    import pydicom.data

    return pydicom.data.get_testdata_file("CT_small.dcm", download=False)


def write_series(
    folder: Path,
    n_slices: int = 8,
    *,
    slice_gap: float = 5.0,
    seed: int = 0,
    series_uid: str | None = None,
    positions: list[float] | None = None,
) -> tuple[str, np.ndarray]:
    """Write `n_slices` copies of CT_small.dcm as one series with shuffled file names.

    Slice k (in anatomical order, z increasing) lies at z = CT_ORIGIN[2] + k * slice_gap and has
    its stored pixel [0, 0] set to 1000 + k, so the slice order can be read back from the
    voxels. Returns (SeriesInstanceUID, expected HU volume (columns, rows, slices))."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    src = ct_small_path()
    base = pydicom.dcmread(src)
    pixels = base.pixel_array
    uid = series_uid or generate_uid()
    zs = positions if positions is not None else [CT_ORIGIN[2] + k * slice_gap for k in range(n_slices)]
    order = list(range(len(zs)))
    random.Random(seed).shuffle(order)
    slope, intercept = float(base.RescaleSlope), float(base.RescaleIntercept)
    volume = []
    for k in range(len(zs)):
        a = pixels.copy()
        a[0, 0] = 1000 + k
        volume.append(a.astype(np.float32) * slope + intercept)
    for n, k in enumerate(order):
        ds = pydicom.dcmread(src)
        ds.ImagePositionPatient = [CT_ORIGIN[0], CT_ORIGIN[1], zs[k]]
        ds.SliceLocation = zs[k]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = uid
        a = pixels.copy()
        a[0, 0] = 1000 + k
        ds.PixelData = a.astype(pixels.dtype).tobytes()
        ds.save_as(folder / f"img{n:03d}_{uid[-6:]}.dcm")
    # DICOM rows are y, columns x: expected array indexed (column, row, slice)
    expected = np.stack(volume, axis=-1).transpose(1, 0, 2)
    return uid, expected


def write_manifest(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def nifti_dataset(root: Path, n_per_class: int = 6, shape=(12, 12, 12), split: bool = False) -> Path:
    """`root/images/*.nii.gz` of two classes and `root/manifest.csv` (with a split column if asked)."""
    rows = []
    for label in (0, 1):
        for i in range(n_per_class):
            name = f"images/c{label}_{i}.nii.gz"
            write_nifti(root / name, blob_volume(100 * label + i, shape, label))
            s = ""
            if split:
                s = "," + ("val" if i == 0 else "test" if i == 1 else "train")
            rows.append(f"{name},{'right' if label else 'left'}{s}")
    header = "path,label,split" if split else "path,label"
    return write_manifest(root / "manifest.csv", header, rows)


def write_inflating_nifti(path: Path, shape=(640, 640, 640), dtype=np.float64, block: int = 16 * 2**20) -> Path:
    """A hostile `.nii.gz`: a valid header claiming `shape` × `dtype`, then that many zero bytes,
    gzip-compressed as repeated members (640³ float64: 2.1 GB of voxels in a ~2 MB file).

    Built in well under a second and without ever holding the voxels in memory."""
    import gzip

    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    member = gzip.compress(b"\0" * block, compresslevel=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(hdr.binaryblock + b"\0" * 4))
        for _ in range(n // block):
            fh.write(member)
        if n % block:
            fh.write(gzip.compress(b"\0" * (n % block)))
    return path
