"""Resampling paths for rotating volumes that must be resampled, and their round-trip error.

A rotation by anything but a cube-group element moves voxel centres off the grid, so the
rotated volume is an interpolation of the original: the result mixes what the rotation does with
what the interpolation does (blur, aliasing). Two paths, one convention (`volrot.so3.volume`:
tensor axes (D, H, W) = (x, y, z), out(R p) = in(p) about the grid centre (n − 1)/2, zeros
outside the grid):

- `trilinear`: `rotate_trilinear` (torch `grid_sample`, on the tensor's device). A linear
  B-spline: each resampling is a local average that damps every frequency but the lowest.
- `spline3`: cubic B-spline interpolation (`scipy.ndimage.affine_transform`, order 3, with the
  spline prefilter, `grid-constant` boundary = zeros outside the grid as for trilinear). It
  interpolates the samples exactly and passes far more of the band; it runs on the CPU (the
  result comes back on the tensor's device) and costs about 8× the trilinear one per voxel.

`round_trip(x, R, method)` resamples by R then by Rᵀ (net rotation: none): what is left of
x is the loss of two resamplings, with no rotation in it — the interpolation control of
`volrot eval-rotated` and the `resample` training augmentation. `round_trip_error` measures it
inside the inscribed sphere.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from volrot.so3.volume import rotate_trilinear, rotate_trilinear_each, sphere_mask

RESAMPLERS = ("trilinear", "spline3")


def check_resample(method: str) -> str:
    if method not in RESAMPLERS:
        from volrot.errors import UserError

        raise UserError(f"unknown resampling '{method}' (choose from: {', '.join(RESAMPLERS)})")
    return method


def _matrices(matrices) -> np.ndarray:
    m = matrices.detach().cpu().numpy() if torch.is_tensor(matrices) else np.asarray(matrices)
    return m.astype(np.float64).reshape(-1, 3, 3)


def _spline_one(volume: np.ndarray, mat: np.ndarray, order: int) -> np.ndarray:
    centre = (np.asarray(volume.shape, dtype=np.float64) - 1) / 2
    # output index o reads the input at Rᵀ(o − c) + c
    return ndimage.affine_transform(
        volume, mat.T, offset=centre - mat.T @ centre, order=order, mode="grid-constant", cval=0.0, prefilter=True
    )


def rotate_spline(x: torch.Tensor, matrices, order: int = 3) -> torch.Tensor:
    """Rotate `x` (..., D, H, W) by each of M matrices with B-spline interpolation of `order`.

    Same shapes and convention as `rotate_trilinear`: returns (M, ..., D, H, W) on x's device.
    """
    if x.dim() < 3:
        raise ValueError(f"need at least 3 axes (D, H, W), got shape {tuple(x.shape)}")
    mats = _matrices(matrices)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    shape = tuple(x.shape[-3:])
    flat = x.detach().to("cpu", torch.float64).reshape(-1, *shape).numpy()
    out = np.stack([np.stack([_spline_one(v, m, order) for v in flat]) for m in mats])
    return torch.from_numpy(out).to(device=x.device, dtype=dtype).reshape(len(mats), *x.shape)


def rotate_resampled(x: torch.Tensor, matrices, method: str = "trilinear") -> torch.Tensor:
    """`rotate_trilinear` or `rotate_spline` (order 3) by name: (M, ..., D, H, W)."""
    if method == "trilinear":
        return rotate_trilinear(x, matrices)
    if method == "spline3":
        return rotate_spline(x, matrices, order=3)
    raise ValueError(f"unknown resampling {method!r} (choose from {RESAMPLERS})")


def round_trip(x: torch.Tensor, matrices, method: str = "trilinear") -> torch.Tensor:
    """x resampled by R then by Rᵀ for each of M matrices: (M, ..., D, H, W), no net rotation."""
    mats = _matrices(matrices)
    there = rotate_resampled(x, mats, method)
    return torch.stack([rotate_resampled(there[i], m.T, method)[0] for i, m in enumerate(mats)])


def round_trip_each(x: torch.Tensor, matrices, method: str = "trilinear") -> torch.Tensor:
    """Volume b of a batch (B, C, D, H, W) resampled by `matrices[b]` then back: (B, C, D, H, W)."""
    mats = _matrices(matrices)
    if method == "trilinear":
        m = torch.as_tensor(mats, dtype=torch.float64)
        return rotate_trilinear_each(rotate_trilinear_each(x, m), m.transpose(1, 2))
    return torch.stack([round_trip(v, m, method)[0] for v, m in zip(x, mats)])


def round_trip_error(x: torch.Tensor, matrices, method: str = "trilinear") -> np.ndarray:
    """Relative RMS error ‖RᵀR·x − x‖ / ‖x‖ inside the inscribed sphere, per volume and matrix.

    `x` (B, C, D, H, W) or (D, H, W); returns (M, B) float64.
    """
    if x.dim() == 3:
        x = x[None, None]
    mask = sphere_mask(x.shape[-3:], device=x.device).to(torch.float64)
    back = round_trip(x, matrices, method).to(torch.float64)
    ref = x.to(torch.float64)
    err = ((back - ref) * mask).flatten(2).norm(dim=2)
    norm = (ref * mask).flatten(1).norm(dim=1)
    return (err / norm.clamp_min(1e-300)).cpu().numpy()
