"""Rotating volumes: exact voxel operations for the cube group.

Axis convention: the last three axes of a tensor `(..., D, H, W)` are (x, y, z); rotating by R
means out(R p) = in(p) about the grid centre (n-1)/2. See `volrot.so3.sampling`.
"""

from __future__ import annotations

import torch

from volrot.so3.sampling import GridRotation


def rotate_exact(x: torch.Tensor, rotation: GridRotation) -> torch.Tensor:
    """Apply a cube-group element to the last three axes of `x` exactly (no interpolation)."""
    for op in rotation.ops:
        if op[0] == "rot90":
            _, k, (a, b) = op
            x = torch.rot90(x, k, dims=(a - 3, b - 3))
        elif op[0] == "flip":
            x = torch.flip(x, dims=(op[1] - 3,))
        else:  # pragma: no cover - ops are built in sampling.py
            raise ValueError(f"unknown voxel op {op!r}")
    return x
