"""Read one NIfTI-1/NIfTI-2 (or Analyze) 3D image into an `Image` (voxels + RAS affine).

Nothing but the fixed-size header is decompressed before the input is judged: the first 348
(NIfTI-1/Analyze) or 540 (NIfTI-2) bytes are read and checked for dimensionality, voxel count
(`max_voxels`), voxel bytes as stored (`max_bytes`, shape × data type size) and where the voxel
data start (`vox_offset`, at most `MAX_HEADER_BYTES` of header and extensions). Only then does
nibabel read the extensions and the voxels, so a 2 MB `.nii.gz` whose header claims 640³ float64
is refused after reading a few hundred bytes; an accepted file decompresses at most
`MAX_HEADER_BYTES + max_bytes` bytes. Files without a NIfTI/Analyze header (MGH, PAR/REC...)
are refused. Voxel values come with the header's scaling applied (`scl_slope`/`scl_inter`),
as float32.
"""

from __future__ import annotations

import gzip
import zlib
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

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MAX_HEADER_BYTES = 16 * 2**20  # header + extensions of one file (NIfTI vox_offset), decompressed
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile)


def _not_nifti(src: str, name: str) -> UserError:
    if name.lower().endswith(NIFTI_SUFFIXES + (".hdr", ".img", ".hdr.gz", ".img.gz")):
        return UserError(f"{src}: unreadable NIfTI header (truncated, corrupt, or not NIfTI)")
    return UserError(f"{src}: not a NIfTI image (nibabel cannot read it)")


def _header_file(p: Path) -> Path:
    """The file holding the header: `x.hdr` for an Analyze/NIfTI pair given as `x.img`."""
    low = p.name.lower()
    for img, hdr in ((".img", ".hdr"), (".img.gz", ".hdr.gz")):
        if low.endswith(img):
            for cand in (p.with_name(p.name[: -len(img)] + hdr), p.with_name(p.name[: -len(img)] + hdr.upper())):
                if cand.is_file():
                    return cand
    return p


def probe_header(path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Judge a NIfTI/Analyze file by its fixed-size header alone (at most 540 decompressed bytes).

    Raises `UserError` for a file without such a header, a shape that is not one 3D volume or
    exceeds `max_voxels`, voxel data above `max_bytes`, voxel data placed beyond
    `MAX_HEADER_BYTES`, or an uncompressed file too short for what its header claims."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    p = Path(path)
    src = str(p)
    hfile = _header_file(p)
    try:
        with ImageOpener(str(hfile)) as fh:  # decompresses .gz/.bz2/.zst by suffix, as nibabel does
            block = fh.read(540)
    except _READ_ERRORS as e:
        raise UserError(f"{src}: truncated or corrupt header ({_short(e)})") from None
    sizes = {int.from_bytes(block[:4], order) for order in ("little", "big")} if len(block) >= 4 else set()
    if 540 in sizes and len(block) >= 540:
        klass, size = nib.Nifti2Header, 540
    elif 348 in sizes and len(block) >= 348:
        klass, size = nib.Nifti1Header, 348
    else:
        raise _not_nifti(src, p.name)
    try:
        hdr = klass(block[:size], check=False)
        shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
        offset = int(hdr["vox_offset"])
        magic = bytes(hdr["magic"]) if "magic" in hdr else b""
    except Exception as e:  # nibabel's HeaderDataError family: unknown datatype, bad dims...
        raise UserError(f"{src}: unreadable image header ({_short(e)})") from None
    check_header_shape(src, shape, max_voxels)
    n_bytes = check_header_bytes(src, shape, dtype.itemsize, dtype.name, max_bytes)
    single = magic in (b"n+1", b"n+2") or p.name.lower().endswith(NIFTI_SUFFIXES)
    if single and not 0 <= offset <= MAX_HEADER_BYTES:
        raise UserError(
            f"{src}: header places the voxel data at byte {offset}, beyond the {MAX_HEADER_BYTES} bytes allowed "
            "for header and extensions"
        )
    if not single and hfile.name.lower().endswith((".gz", ".bz2", ".zst")):
        _check_stream_length(src, hfile, MAX_HEADER_BYTES)  # pair header file: nibabel reads it to its end
    data_file = p if single else _image_file(p, hfile)
    if data_file is not None and data_file.suffix.lower() in (".nii", ".img"):
        need = max(offset, 0) + n_bytes
        have = data_file.stat().st_size
        if have < need:
            raise UserError(f"{src}: truncated or corrupt voxel data (file holds {have} bytes, its header needs {need})")


def _image_file(p: Path, hfile: Path) -> Path | None:
    """The `.img` of a header/image pair (None when it cannot be found; nibabel will say so)."""
    if p != hfile:
        return p
    low = p.name.lower()
    for hdr, img in ((".hdr", ".img"), (".hdr.gz", ".img.gz")):
        if low.endswith(hdr):
            cand = p.with_name(p.name[: -len(hdr)] + img)
            return cand if cand.is_file() else None
    return None


def _check_stream_length(src: str, path: Path, limit: int) -> None:
    """Refuse a compressed file that inflates to more than `limit` bytes (read in 1 MiB blocks)."""
    from nibabel.openers import ImageOpener

    total = 0
    try:
        with ImageOpener(str(path)) as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    return
                total += len(block)
                if total > limit:
                    raise UserError(f"{path}: header file inflates to more than {limit} bytes (header of {src})")
    except _READ_ERRORS as e:
        raise UserError(f"{src}: truncated or corrupt header ({_short(e)})") from None


def read_nifti(path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> Image:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    p = Path(path)
    src = str(p)
    if not p.exists():
        raise UserError(f"{src}: file does not exist")
    if p.is_dir():
        raise UserError(f"{src}: is a folder, not a NIfTI file (DICOM series folders need --data dicom:...)")
    probe_header(p, max_voxels, max_bytes)
    try:
        img = nib.load(str(p))
    except ImageFileError:
        raise _not_nifti(src, p.name) from None
    except _READ_ERRORS as e:
        raise UserError(f"{src}: truncated or corrupt header ({_short(e)})") from None
    except Exception as e:  # nibabel raises its own HeaderDataError/WrapStructError family
        raise UserError(f"{src}: unreadable image header ({_short(e)})") from None
    if not hasattr(img, "dataobj") or not hasattr(img, "affine"):
        raise UserError(f"{src}: not a volumetric image (nibabel read it as {type(img).__name__})")

    shape3 = check_header_shape(src, img.shape, max_voxels)
    stored = np.dtype(img.get_data_dtype())
    check_header_bytes(src, img.shape, stored.itemsize, stored.name, max_bytes)
    affine = check_affine(src, img.affine)
    try:
        data = np.asarray(img.dataobj)
    except _READ_ERRORS as e:
        raise UserError(f"{src}: truncated or corrupt voxel data ({_short(e)})") from None
    if data.dtype.fields is not None or np.iscomplexobj(data):
        raise UserError(f"{src}: voxel type {img.get_data_dtype()} is not a scalar real type (RGB/complex)")
    try:
        array = np.asarray(data, dtype=np.float32).reshape(shape3)
    except (TypeError, ValueError) as e:
        raise UserError(f"{src}: voxel data cannot be read as numbers ({_short(e)})") from None
    check_finite(src, array)
    return Image(array, affine)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
