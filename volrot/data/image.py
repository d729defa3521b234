"""A loaded 3D image and the checks every reader applies before and after reading voxels.

`Image.array` is indexed by the file's own voxel indices `(i, j, k)`; `Image.affine` (4x4) maps
`(i, j, k, 1)` to world coordinates in millimetres, **RAS+** (+x towards the patient's Right, +y Anterior,
+z Superior), the NIfTI convention. DICOM (LPS+) readers convert to RAS before building an `Image`.

The checks raise `UserError` with one line naming the file and the problem:
`check_header_shape` and `check_header_bytes` run on the header only (before any voxel memory
is allocated or any voxel byte decompressed), and `check_finite` on the voxels once read.

Limits on one input (documented in docs/data.md, "Limits"): at most `max_voxels` voxels
(default 2**28) and at most `max_bytes` bytes of voxel data as stored (default 1 GiB; shape ×
the header's data type size, e.g. 640³ float64 = 2.1 GB is refused). Reading an accepted input
then holds at most the stored voxel data plus its float32 copy in memory.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from volrot.errors import UserError

DEFAULT_MAX_VOXELS = 2**28  # 268M voxels, about 1 GiB as float32
DEFAULT_MAX_BYTES = 2**30  # 1 GiB of voxel data as stored in the file (shape × data type size)


class Image(NamedTuple):
    array: np.ndarray  # float32, (I, J, K), file voxel order
    affine: np.ndarray  # float64 (4, 4): voxel (i, j, k) -> RAS mm

    @property
    def spacing(self) -> np.ndarray:
        """Voxel edge lengths in mm along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def _fmt_shape(shape) -> str:
    return "×".join(str(int(s)) for s in shape)


def check_header_shape(source: str, shape: tuple[int, ...], max_voxels: int) -> tuple[int, int, int]:
    """Validate a header's shape and return the 3D spatial shape to read.

    Accepts `(I, J, K)` and `(I, J, K, 1, ...)`. Refuses 2D images (fewer than three spatial
    axes longer than 1), 4D+ images holding more than one volume, empty shapes and shapes
    above `max_voxels` (before anything is allocated).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or any(s < 2 for s in shape[:3]):
        raise UserError(f"{source}: 2D image (shape {_fmt_shape(shape)}); volrot needs a 3D volume")
    extra = shape[3:]
    n_vols = int(np.prod(extra)) if extra else 1
    if n_vols == 0:
        raise UserError(f"{source}: image has an empty dimension (shape {_fmt_shape(shape)})")
    if n_vols > 1:
        raise UserError(
            f"{source}: {len(shape)}D image with {n_vols} volumes (shape {_fmt_shape(shape)}); "
            "give one 3D volume per file"
        )
    n = int(np.prod(shape[:3], dtype=object))
    if n > max_voxels:
        raise UserError(
            f"{source}: header claims {_fmt_shape(shape[:3])} = {n:.3g} voxels, above the limit of "
            f"{max_voxels:.3g} (raise data.preprocess.max_voxels if this size is real)"
        )
    return shape[0], shape[1], shape[2]


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def check_header_bytes(source: str, shape: tuple[int, ...], itemsize: int, dtype_name: str, max_bytes: int) -> int:
    """Refuse a header whose voxel data (shape × `itemsize`) exceeds `max_bytes`; return the byte count.

    Runs on the header alone, before anything is decompressed or allocated."""
    n = int(np.prod([int(s) for s in shape], dtype=object)) * int(itemsize)
    if n > max_bytes:
        have, limit = _fmt_bytes(n), _fmt_bytes(max_bytes)
        if have == limit:  # too close to tell apart when rounded
            have, limit = f"{n} bytes", f"{max_bytes} bytes"
        raise UserError(
            f"{source}: header claims {_fmt_shape(shape)} {dtype_name} = {have} of voxel data, above the "
            f"limit of {limit} per input (raise data.preprocess.max_bytes if this size is real)"
        )
    return n


def check_finite(source: str, array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum()) - n_nan
        raise UserError(f"{source}: {n_nan} NaN and {n_inf} Inf voxels; fix or mask them before training")


def check_affine(source: str, affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise UserError(f"{source}: voxel-to-world transform is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise UserError(f"{source}: voxel-to-world transform is singular (zero voxel size?)")
    return affine
