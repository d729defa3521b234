"""A loaded 3D image and the checks every reader applies before and after reading voxels.

`Image.array` is indexed by the file's own voxel indices `(i, j, k)`; `Image.affine` (4x4) maps
`(i, j, k, 1)` to world coordinates in millimetres, **RAS+** (+x towards the patient's Right, +y Anterior,
+z Superior), the NIfTI convention. DICOM (LPS+) readers convert to RAS before building an `Image`.

The checks raise `UserError` with one line naming the file and the problem:
`check_header_shape` runs on the header only (before any voxel memory is allocated), and
`check_finite` on the voxels once read.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from volrot.errors import UserError

DEFAULT_MAX_VOXELS = 2**28  # 268M voxels, about 1 GiB as float32


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


def check_finite(source: str, array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum()) - n_nan
        raise UserError(f"{source}: {n_nan} NaN and {n_inf} Inf voxels; replace them (e.g. by the background value) in the file and try again")


def check_affine(source: str, affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise UserError(f"{source}: voxel-to-world transform is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise UserError(f"{source}: voxel-to-world transform is singular (zero voxel size?)")
    return affine
