"""Rotating volumes: exact voxel operations for the cube group, trilinear resampling for any
rotation, and the masks/padding that keep corners from deciding a result.

Axis convention (tested in tests/test_so3_volume.py): the last three axes of a tensor
`(..., D, H, W)` are the coordinates (x, y, z). A voxel with index (i, j, k) sits at the centred
position p = (i − c_D, j − c_H, k − c_W), c = (n − 1)/2. Rotating by R means out(R p) = in(p),
i.e. out(q) = in(Rᵀ q), about the grid centre, in voxel units (isotropic voxels assumed).

`torch.nn.functional.grid_sample` indexes its grid's last dimension as (W, H, D) — the reverse
of ours — with −1/+1 at the first/last voxel centre (`align_corners=True`);
`rotate_trilinear` converts.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from volrot.so3.groups import CubeElement, rotate_exact  # noqa: F401  (rotate_exact: re-exported)


def rotate_exact_batch(x: torch.Tensor, rotations: Sequence[CubeElement]) -> torch.Tensor:
    """Exact rotations of `x` (..., D, H, W) by each cube element: returns (M, ..., D, H, W)."""
    return torch.stack([rotate_exact(x, g) for g in rotations])


def centred_coordinates(shape: Sequence[int], *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(D, H, W, 3) positions (x, y, z) of the voxel centres relative to the grid centre.

    With shape (k, k, k) for an odd k it is the integer offset lattice of a k³ convolution
    kernel; `.reshape(-1, 3)` lists the offsets in conv3d weight order.
    """
    axes = [torch.arange(n, device=device, dtype=dtype) - (n - 1) / 2.0 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def _as_matrices(matrices, like: torch.Tensor, dtype) -> torch.Tensor:
    mats = torch.as_tensor(np.asarray(matrices) if not torch.is_tensor(matrices) else matrices)
    return mats.to(device=like.device, dtype=dtype).reshape(-1, 3, 3)


def _sampling_grid(shape: tuple[int, int, int], mats: torch.Tensor) -> torch.Tensor:
    """grid_sample grids (M, D, H, W, 3) that rotate by each of `mats` (M, 3, 3) about the centre."""
    if min(shape) < 2:
        raise ValueError(f"every spatial size must be >= 2, got {shape}")
    coords = centred_coordinates(shape, device=mats.device, dtype=mats.dtype)
    # source p = Rᵀ q for output position q; as rows: p_j = Σ_i q_i R_ij
    src = torch.einsum("dhwi,mij->mdhwj", coords, mats)
    half = torch.tensor([(n - 1) / 2.0 for n in shape], device=mats.device, dtype=mats.dtype)
    return (src / half).flip(-1)  # (x, y, z) -> grid_sample's (W, H, D) order


def rotate_trilinear(x: torch.Tensor, matrices) -> torch.Tensor:
    """Rotate `x` (..., D, H, W) by each of M rotation matrices with trilinear interpolation.

    `matrices` is (M, 3, 3) or (3, 3) (array or tensor). Returns (M, ..., D, H, W) on x's device.
    Samples falling outside the grid read zeros. All leading axes (batch, channel) share one
    sampling grid per rotation, so the cost is one grid per rotation plus one `grid_sample`.
    """
    if x.dim() < 3:
        raise ValueError(f"need at least 3 axes (D, H, W), got shape {tuple(x.shape)}")
    shape = tuple(x.shape[-3:])
    dtype = x.dtype if x.is_floating_point() else torch.float32
    mats = _as_matrices(matrices, x, dtype)
    lead = tuple(x.shape[:-3])
    flat = x.to(dtype).reshape(1, -1, *shape).expand(len(mats), -1, *shape)
    grid = _sampling_grid(shape, mats)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(len(mats), *lead, *shape)


def rotate_trilinear_each(x: torch.Tensor, matrices) -> torch.Tensor:
    """Rotate volume b of a batch `x` (B, C, D, H, W) by `matrices[b]` (B, 3, 3): one grid_sample.

    Used for training-time augmentation (a different random rotation per volume).
    """
    if x.dim() != 5:
        raise ValueError(f"need a batch (B, C, D, H, W), got shape {tuple(x.shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    mats = _as_matrices(matrices, x, dtype)
    if len(mats) != x.shape[0]:
        raise ValueError(f"need one matrix per volume: {len(mats)} matrices for a batch of {x.shape[0]}")
    grid = _sampling_grid(tuple(x.shape[-3:]), mats)
    return F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def sphere_mask(shape: Sequence[int], *, device=None) -> torch.Tensor:
    """Boolean (D, H, W) mask of the voxel centres inside the inscribed sphere.

    The radius is min((n − 1)/2): any rotation about the centre keeps these voxel centres inside
    the grid, so a masked volume loses nothing when rotated.
    """
    coords = centred_coordinates(shape, device=device, dtype=torch.float64)
    radius = min((n - 1) / 2.0 for n in shape)
    return coords.norm(dim=-1) <= radius + 1e-6


def apply_sphere_mask(x: torch.Tensor) -> torch.Tensor:
    """Zero every voxel of `x` (..., D, H, W) outside the inscribed sphere."""
    return x * sphere_mask(x.shape[-3:], device=x.device).to(x.dtype)


def circumscribed_padding(shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxels to add on each side of each axis so that the sphere through the corner voxel
    centres fits inside the new grid (the centre stays on the same voxel position)."""
    centres = [(n - 1) / 2.0 for n in shape]
    radius = math.sqrt(sum(c * c for c in centres))
    return tuple(max(0, math.ceil(radius - c - 1e-9)) for c in centres)


def pad_to_circumscribed(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad the last three axes so that no rotation about the centre cuts the volume off."""
    pd, ph, pw = circumscribed_padding(x.shape[-3:])
    return F.pad(x, (pw, pw, ph, ph, pd, pd))


def prepare_volume(x: torch.Tensor, frame: str) -> torch.Tensor:
    """Bring an unrotated batch into the frame that rotations use (`volrot eval-rotated --mask`).

    `frame="sphere"`: zero outside the inscribed sphere (a mask); `"pad"`: zero-pad to the
    circumscribed sphere (a larger grid, nothing masked); `"none"`: unchanged (rotated corners
    are then cut off and filled with zeros).
    """
    if frame == "sphere":
        return apply_sphere_mask(x)
    if frame == "pad":
        return pad_to_circumscribed(x)
    if frame == "none":
        return x
    raise ValueError(f"frame must be 'sphere', 'pad' or 'none', got {frame!r}")
