"""The one preprocessing pipeline for NIfTI/DICOM volumes, shared by training and `predict`.

`preprocess_file(path, spec, center=None)` is the single entry point: a file path means a
NIfTI image, a folder path a DICOM series. It returns a float32 array `(1, D, H, W)`.

Steps (all parameters live in `PreprocessSpec`, which is stored in checkpoint metadata via
`to_dict()` and rebuilt with `from_dict()`, so prediction applies exactly the same steps):

1. read the image and its voxel-to-world affine (RAS+ mm; DICOM LPS is converted);
2. intensity normalisation on the native voxels:
   - `ct`: clip to the HU window `ct_window` (default -1000..400), then map to [0, 1];
   - `mr`: map the `percentiles` (default 0.5 and 99.5) of the volume to 0 and 1, clip to
     [0, 1] (works for any modality; a constant volume becomes zeros);
   - `none`: values unchanged;
3. optional Gaussian anti-aliasing along input axes whose voxels are finer than `spacing`
   (sigma = (factor - 1) / 2 voxels, the scikit-image rule);
4. a single resampling (interpolation order `order`, default trilinear) onto the output grid:
   `size` voxels of `spacing` mm, axis-aligned with world RAS, centred on `center`. This one
   step is the reorientation to RAS, the isotropic resampling and the crop/pad together;
   voxels outside the image are padded with 0 (`ct`/`mr`) or the volume minimum (`none`).
   Oblique acquisitions are therefore resampled onto world axes, not just permuted.
5. channel axis in front.

**Axis convention**: output axes (D, H, W) = world (x, y, z) = (Right, Anterior, Superior):
index increases towards the patient's right, anterior and superior. Output voxel `o` sits at
world point `center + spacing * (o - (size - 1) / 2)`.

**Centre**: by default the centre of the image's voxel grid (world point of voxel
`(shape - 1) / 2`). A given centre is read according to `center_space`:
`world` (default) = RAS+ millimetres, the coordinates 3D Slicer / FSLeyes show; `voxel` =
`(i, j, k)` indices into the file as stored (for DICOM: column, row, slice in sorted order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from volrot.data.image import DEFAULT_MAX_BYTES, DEFAULT_MAX_VOXELS, Image
from volrot.errors import UserError

INTENSITY_MODES = ("ct", "mr", "none")
CENTER_SPACES = ("world", "voxel")
SPEC_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int, int] = (28, 28, 28)  # output voxels (D, H, W) = (x, y, z)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # output voxel size, mm
    intensity: str = "mr"  # ct | mr | none
    ct_window: tuple[float, float] = (-1000.0, 400.0)  # HU, for intensity=ct
    percentiles: tuple[float, float] = (0.5, 99.5)  # for intensity=mr
    order: int = 1  # interpolation order: 0 nearest, 1 trilinear, 3 cubic
    antialias: bool = True
    center_space: str = "world"  # how given centres are read: world (RAS mm) | voxel (i,j,k)
    max_voxels: int = DEFAULT_MAX_VOXELS  # refuse larger images (read from the header)
    max_bytes: int = DEFAULT_MAX_BYTES  # refuse more voxel data as stored (shape × data type size)

    def __post_init__(self) -> None:
        if len(self.size) != 3 or any(int(s) < 2 for s in self.size):
            raise UserError(f"data.preprocess.size must be 3 sizes >= 2, got {list(self.size)}")
        if len(self.spacing) != 3 or any(not float(s) > 0 for s in self.spacing):
            raise UserError(f"data.preprocess.spacing must be positive (mm), got {list(self.spacing)}")
        if self.intensity not in INTENSITY_MODES:
            raise UserError(f"data.preprocess.intensity must be one of {', '.join(INTENSITY_MODES)}, got {self.intensity!r}")
        lo, hi = self.ct_window
        if not hi > lo:
            raise UserError(f"data.preprocess.ct_window must be [low, high] with high > low, got {list(self.ct_window)}")
        plo, phi = self.percentiles
        if not 0 <= plo < phi <= 100:
            raise UserError(f"data.preprocess.percentiles must satisfy 0 <= low < high <= 100, got {list(self.percentiles)}")
        if self.order not in (0, 1, 2, 3, 4, 5):
            raise UserError(f"data.preprocess.order must be an interpolation order 0..5, got {self.order}")
        if self.center_space not in CENTER_SPACES:
            raise UserError(f"data.preprocess.center_space must be world or voxel, got {self.center_space!r}")
        if self.max_voxels < 1:
            raise UserError(f"data.preprocess.max_voxels must be positive, got {self.max_voxels}")
        if self.max_bytes < 1:
            raise UserError(f"data.preprocess.max_bytes must be positive, got {self.max_bytes}")

    # --- (de)serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        out = {"source": "volume", "version": SPEC_VERSION}
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in d.items()})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "data.preprocess") -> "PreprocessSpec":
        """Build from a dict (checkpoint metadata or recipe `data.preprocess`); unknown keys and
        badly typed values are `UserError`s naming `where.key`."""
        if not isinstance(d, dict):
            raise UserError(f"{where} must be a mapping")
        d = dict(d)
        source = d.pop("source", "volume")
        if source != "volume":
            raise UserError(f"{where}: preprocessing of kind {source!r} is not the NIfTI/DICOM pipeline")
        d.pop("version", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown key '{where}.{unknown[0]}' (known: {', '.join(sorted(names))})")
        kw: dict[str, Any] = {}
        for key, value in d.items():
            kw[key] = _coerce(where, key, value)
        return cls(**kw)

    def key(self) -> str:
        """Hash of everything that changes the output (not the limits): part of cache keys."""
        d = self.to_dict()
        d.pop("max_voxels")
        d.pop("max_bytes")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _triple(where: str, key: str, value: Any, typ) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise UserError(f"{where}.{key} must be a number or a list of 3 numbers, got {value!r}")
    return tuple(_num(where, key, v, typ) for v in value)


def _num(where: str, key: str, v: Any, typ):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UserError(f"{where}.{key} must be numeric, got {v!r}")
    if typ is int:
        if float(v) != int(v):
            raise UserError(f"{where}.{key} must be an integer, got {v!r}")
        return int(v)
    return float(v)


def _coerce(where: str, key: str, value: Any) -> Any:
    if key == "size":
        return _triple(where, key, value, int)
    if key == "spacing":
        return _triple(where, key, value, float)
    if key in ("ct_window", "percentiles"):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise UserError(f"{where}.{key} must be a list [low, high], got {value!r}")
        return tuple(_num(where, key, v, float) for v in value)
    if key in ("order", "max_voxels", "max_bytes"):
        return _num(where, key, value, int)
    if key == "antialias":
        if not isinstance(value, bool):
            raise UserError(f"{where}.{key} must be true or false, got {value!r}")
        return value
    if key in ("intensity", "center_space"):
        if not isinstance(value, str):
            raise UserError(f"{where}.{key} must be a string, got {value!r}")
        return value.lower()
    raise AssertionError(key)


def spec_from_options(options: dict[str, Any] | None, size: int) -> PreprocessSpec:
    """The spec of a recipe: `data.preprocess` options, with `data.size` as the cube edge unless
    `data.preprocess.size` is given."""
    opts = dict(options or {})
    opts.setdefault("size", size)
    return PreprocessSpec.from_dict(opts)


# --- pipeline ------------------------------------------------------------------------------


def load_volume(
    path: str | Path,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    series_uid: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image:
    """Read a NIfTI file or a DICOM series folder: `Image(array (I,J,K) float32, affine RAS mm)`.

    Both readers judge the input by its header(s) against `max_voxels` and `max_bytes` before
    any voxel is decompressed (see `volrot.data.image`)."""
    p = Path(path)
    if p.is_dir():
        from volrot.data.dicom import read_dicom_series

        return read_dicom_series(p, series_uid=series_uid, max_voxels=max_voxels, max_bytes=max_bytes)
    from volrot.data.nifti import read_nifti

    return read_nifti(p, max_voxels=max_voxels, max_bytes=max_bytes)


def intensity_window(array: np.ndarray, spec: PreprocessSpec) -> tuple[float, float] | None:
    """(low, high) mapped to (0, 1) for `ct` (the HU window) and `mr` (the volume's percentiles,
    computed on the whole image); None for `none`."""
    if spec.intensity == "ct":
        return float(spec.ct_window[0]), float(spec.ct_window[1])
    if spec.intensity == "mr":
        lo, hi = np.percentile(array, spec.percentiles)
        return float(lo), float(hi)
    return None


def apply_window(array: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """`clip((x - low) / (high - low), 0, 1)`; a degenerate window (constant volume) gives zeros."""
    a = np.asarray(array, dtype=np.float32)
    if window is None:
        return a
    lo, hi = window
    if not hi > lo:
        return np.zeros_like(a)
    return np.clip((a - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32, copy=False)


def normalise_intensity(array: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, float]:
    """Returns (normalised float32 array, padding value for voxels outside the image)."""
    window = intensity_window(array, spec)
    out = apply_window(array, window)
    return out, (0.0 if window is not None else float(out.min()))


def world_center(image: Image, center: Sequence[float] | None, center_space: str) -> np.ndarray:
    """The output grid's centre in world RAS mm."""
    if center is None:
        ijk = (np.array(image.array.shape, dtype=np.float64) - 1.0) / 2.0
    else:
        c = np.asarray(center, dtype=np.float64).reshape(3)
        if center_space == "world":
            return c
        ijk = c
    return image.affine[:3, :3] @ ijk + image.affine[:3, 3]


def preprocess(image: Image, spec: PreprocessSpec, center: Sequence[float] | None = None) -> np.ndarray:
    """Apply steps 2-5 of the pipeline to a loaded image: float32 `(1, D, H, W)`.

    Only the part of the image that the output grid can reach (plus the smoothing and
    interpolation support) is normalised, smoothed and interpolated; the percentiles of `mr`
    still come from the whole image. For interpolation orders 0 and 1 this gives exactly the
    result of processing the whole image."""
    from scipy import ndimage

    full = image.array
    window = intensity_window(full, spec)
    pad = 0.0 if window is not None else float(full.min())
    out_spacing = np.asarray(spec.spacing, dtype=np.float64)
    size = np.asarray(spec.size, dtype=np.float64)
    sigma = np.zeros(3)
    if spec.antialias:
        # output spacing seen along each input axis, in input voxels (scikit-image's rule)
        directions = image.affine[:3, :3] / image.spacing
        factor = (np.abs(directions.T) @ out_spacing) / image.spacing
        sigma = np.maximum(0.0, (factor - 1.0) / 2.0)
    c = world_center(image, center, spec.center_space)
    inv = np.linalg.inv(image.affine)
    matrix = inv[:3, :3] @ np.diag(out_spacing)
    offset = inv[:3, :3] @ (c - out_spacing * (size - 1.0) / 2.0) + inv[:3, 3]

    # input box the output grid reaches, widened by the Gaussian radius (truncate=4) and the
    # interpolation support
    corners = np.array(np.meshgrid(*[[0.0, n - 1.0] for n in size], indexing="ij")).reshape(3, -1).T
    reach = corners @ matrix.T + offset
    margin = np.ceil(4.0 * sigma + 0.5) + spec.order + (8 if spec.order > 1 else 1)
    shape = np.array(full.shape)
    lo = np.clip(np.floor(reach.min(0) - margin), 0, shape).astype(int)
    hi = np.clip(np.ceil(reach.max(0) + margin) + 1, 0, shape).astype(int)
    if np.any(hi <= lo):  # the output grid lies entirely outside the image
        return np.full((1, *spec.size), pad, dtype=np.float32)
    data = apply_window(full[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], window)
    if np.any(sigma > 0):
        data = ndimage.gaussian_filter(data, sigma=sigma, mode="nearest")
    out = ndimage.affine_transform(
        data,
        matrix,
        offset=offset - lo,
        output_shape=tuple(int(s) for s in spec.size),
        order=spec.order,
        mode="constant",
        cval=pad,
        prefilter=spec.order > 1,
    )
    return out.astype(np.float32, copy=False)[None]


def preprocess_file(
    path: str | Path,
    spec: PreprocessSpec,
    center: Sequence[float] | None = None,
    series_uid: str | None = None,
) -> np.ndarray:
    """The entry point shared by training and `predict`: file/series -> float32 `(1, D, H, W)`."""
    image = load_volume(path, max_voxels=spec.max_voxels, series_uid=series_uid, max_bytes=spec.max_bytes)
    return preprocess(image, spec, center)
