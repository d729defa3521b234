"""Read one DICOM series (a folder of slice files) into an `Image` (voxels + RAS affine).

SimpleITK's `ImageSeriesReader` (GDCM) groups files by SeriesInstanceUID and sorts slices by
their position along the slice normal (ImagePositionPatient), not by file name. Voxel values
have RescaleSlope/RescaleIntercept applied (CT comes back in HU).

A series folder must hold one series and nothing else (hidden files such as `.DS_Store` are
ignored). When it holds several series, pass `series_uid` to pick one; without it the folder is
refused as an ambiguous mix. Before the voxels are read, every slice header is checked: same
rows/columns and orientation, distinct positions, even spacing, the voxel count against
`max_voxels` and the voxel data (read as float32, 4 bytes a voxel) against `max_bytes`. The
series is decoded straight to float32, so reading it holds at most twice that in memory.

SimpleITK works in LPS+ world coordinates; the returned affine is RAS+
(`diag(-1, -1, 1) @ LPS`). Array axes are (column, row, slice) = SimpleITK's (x, y, z).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volrot.data.image import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_VOXELS,
    Image,
    check_affine,
    check_finite,
    check_header_bytes,
    check_header_shape,
)
from volrot.errors import UserError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def list_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _has_dicom_magic(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM"


def series_files(folder: str | Path, series_uid: str | None = None) -> tuple[str, list[str]]:
    """(SeriesInstanceUID, slice files in slice order) of the one series in `folder`."""
    import SimpleITK as sitk

    f = Path(folder)
    src = str(f)
    if not f.exists():
        raise UserError(f"{src}: series folder does not exist")
    if not f.is_dir():
        raise UserError(f"{src}: is a file; DICOM entries must be series folders (one folder per series)")
    files = list_files(f)
    if not files:
        subdirs = [p for p in f.iterdir() if p.is_dir()]
        what = "holds only subfolders" if subdirs else "is empty"
        raise UserError(f"{src}: folder {what}; expected the DICOM slice files of one series")
    reader = sitk.ImageSeriesReader()
    uids = list(reader.GetGDCMSeriesIDs(str(f)))
    if not uids:
        raise UserError(f"{src}: no DICOM series found ({len(files)} files, none readable as DICOM images)")
    by_uid = {u: [str(x) for x in reader.GetGDCMSeriesFileNames(str(f), u)] for u in uids}
    listed = {Path(x).resolve() for group in by_uid.values() for x in group}
    strays = [p for p in files if p.resolve() not in listed]
    if strays:
        what = "truncated or corrupt DICOM file" if _has_dicom_magic(strays[0]) else "not a DICOM file"
        raise UserError(
            f"{strays[0]}: {what} in series folder {src} ({len(strays)} such file{'s' if len(strays) > 1 else ''}); "
            "series folders must hold only DICOM slices"
        )
    if series_uid is not None:
        if series_uid not in by_uid:
            raise UserError(f"{src}: no series with SeriesInstanceUID {series_uid} (found: {', '.join(uids)})")
        return series_uid, by_uid[series_uid]
    if len(uids) > 1:
        raise UserError(
            f"{src}: folder mixes {len(uids)} DICOM series ({', '.join(uids)}); "
            "put each series in its own folder or name one in the manifest's series_uid column"
        )
    return uids[0], by_uid[uids[0]]


def _check_slices(src: str, files: list[str], max_voxels: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Header-only checks of every slice (nothing but headers is read here)."""
    import SimpleITK as sitk

    sizes, dirs, origins = [], [], []
    for name in files:
        r = sitk.ImageFileReader()
        r.SetFileName(name)
        try:
            r.ReadImageInformation()
        except RuntimeError:
            raise UserError(f"{name}: truncated or corrupt DICOM header (series {src})") from None
        if r.GetNumberOfComponents() != 1:
            raise UserError(f"{src}: {r.GetNumberOfComponents()} values per voxel (colour?); need one")
        sizes.append(tuple(r.GetSize()))
        dirs.append(np.array(r.GetDirection(), dtype=np.float64))
        origins.append(np.array(r.GetOrigin(), dtype=np.float64))
    if any(len(s) != len(sizes[0]) or s[:2] != sizes[0][:2] for s in sizes):
        kinds = sorted({"×".join(map(str, s[:2])) for s in sizes})
        raise UserError(f"{src}: slices of different sizes ({', '.join(kinds)}); the series is a mix")
    if any(not np.allclose(d, dirs[0], atol=1e-4) for d in dirs):
        raise UserError(f"{src}: slices with different orientations; the series is a mix")
    depth = sum(int(s[2]) if len(s) > 2 else 1 for s in sizes)
    check_header_shape(src, (sizes[0][0], sizes[0][1], depth), max_voxels)
    check_header_bytes(src, (sizes[0][0], sizes[0][1], depth), 4, "float32", max_bytes)
    if len(files) < 2:
        return
    d = dirs[0]
    normal = d.reshape(len(origins[0]), -1)[:, -1] if d.size == 9 else np.array([0.0, 0.0, 1.0])
    pos = np.sort(np.array([o @ normal for o in origins]))
    gaps = np.diff(pos)
    if np.any(gaps < 1e-3):
        raise UserError(f"{src}: two or more slices share one position; the series is a mix or has duplicates")
    if gaps.max() > 1.01 * gaps.min() + 1e-3:
        raise UserError(
            f"{src}: uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm); missing or extra slices"
        )


def read_dicom_series(
    folder: str | Path,
    series_uid: str | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image:
    import SimpleITK as sitk

    src = str(folder)
    _, files = series_files(folder, series_uid)
    _check_slices(src, files, max_voxels, max_bytes)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)  # 4 bytes a voxel, whatever the rescale slope
    try:
        img = reader.Execute()
    except RuntimeError as e:
        first = " ".join(str(e).split())[:160]
        raise UserError(f"{src}: truncated or corrupt DICOM pixel data ({first})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"{src}: {img.GetNumberOfComponentsPerPixel()} values per voxel (colour?); need one")
    check_header_shape(src, tuple(img.GetSize()), max_voxels)
    array = np.empty(tuple(img.GetSize()), dtype=np.float32)
    array[...] = sitk.GetArrayViewFromImage(img).transpose(2, 1, 0)  # one copy, in (x, y, z) order
    check_finite(src, array)
    lps = np.eye(4)
    lps[:3, :3] = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    affine = check_affine(src, LPS_TO_RAS @ lps)
    return Image(array, affine)
