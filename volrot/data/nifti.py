"""Read one NIfTI (or any nibabel-readable) 3D image into an `Image` (voxels + RAS affine).

The header is read first (`nibabel.load` is lazy) and checked for dimensionality and size, so
a header claiming an absurd size is refused before any voxel memory is allocated. Voxel values
come with the header's scaling applied (`scl_slope`/`scl_inter`), as float32.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from volrot.data.image import DEFAULT_MAX_VOXELS, Image, check_affine, check_finite, check_header_shape
from volrot.errors import UserError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_nifti(path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    p = Path(path)
    src = str(p)
    if not p.exists():
        raise UserError(f"{src}: file does not exist")
    if p.is_dir():
        raise UserError(f"{src}: is a folder, not a NIfTI file (DICOM series folders need --data dicom:...)")
    if _is_dicom_file(p):
        raise UserError(
            f"{src}: a single DICOM file (one slice of a series); give the series folder instead, "
            "the folder holding all the series' slice files"
        )
    try:
        img = nib.load(str(p))
    except ImageFileError:
        if p.name.lower().endswith(NIFTI_SUFFIXES + (".hdr", ".img")):
            raise UserError(f"{src}: unreadable NIfTI header (truncated, corrupt, or not NIfTI)") from None
        raise UserError(f"{src}: not a NIfTI image (nibabel cannot read it)") from None
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as e:
        raise UserError(f"{src}: truncated or corrupt header ({_short(e)})") from None
    except Exception as e:  # nibabel raises its own HeaderDataError/WrapStructError family
        raise UserError(f"{src}: unreadable image header ({_short(e)})") from None
    if not hasattr(img, "dataobj") or not hasattr(img, "affine"):
        raise UserError(f"{src}: not a volumetric image (nibabel read it as {type(img).__name__})")

    shape3 = check_header_shape(src, img.shape, max_voxels)
    affine = check_affine(src, img.affine)
    try:
        data = np.asarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as e:
        raise UserError(f"{src}: truncated or corrupt voxel data ({_short(e)})") from None
    if data.dtype.fields is not None or np.iscomplexobj(data):
        raise UserError(f"{src}: voxel type {img.get_data_dtype()} is not a scalar real type (RGB/complex)")
    try:
        array = np.asarray(data, dtype=np.float32).reshape(shape3)
    except (TypeError, ValueError) as e:
        raise UserError(f"{src}: voxel data cannot be read as numbers ({_short(e)})") from None
    check_finite(src, array)
    return Image(array, affine)


def _is_dicom_file(p: Path) -> bool:
    """A DICOM Part 10 file ('DICM' after the 128-byte preamble) or a `.dcm` file."""
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
