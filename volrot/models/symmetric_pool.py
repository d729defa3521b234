"""Downsampling by 2 that commutes with the cube group (90° rotations and axis flips).

A strided window keeps the symmetry only if the sampled positions are symmetric about the grid
centre (n-1)/2 of every spatial axis:

- even n: 2×2×2 average pooling, stride 2 (windows {2i, 2i+1} tile the axis; output n/2);
- odd n: 3×3×3 average pooling, stride 2, padding 1 (window centres 0, 2, ..., n-1 include
  the grid centre; output (n+1)/2).

`symmetric_downsample` picks the rule per axis parity, so any cubic input works
(28 -> 14 -> 7 -> 4 -> 2 ...). A fixed stride-2 layer would break the symmetry on one of the two
parities: stride 2 with "same" padding on an even size samples 0, 2, ..., n-2, which is not
symmetric about (n-1)/2. Non-cubic inputs are pooled per axis with the same rule; they are then
only symmetric under the elements that keep their shape (e.g. D4 for a square prism).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def symmetric_downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve the last three axes of `x` (B, C, D, H, W), keeping the cube-group symmetry."""
    sizes = x.shape[-3:]
    kernel = tuple(2 if n % 2 == 0 else 3 for n in sizes)
    padding = tuple(0 if n % 2 == 0 else 1 for n in sizes)
    return F.avg_pool3d(x, kernel_size=kernel, stride=2, padding=padding, count_include_pad=True)


class SymmetricDownsample(nn.Module):
    """Module form of `symmetric_downsample` (parameter-free)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return symmetric_downsample(x)


def downsampled_size(n: int) -> int:
    """Output size of `symmetric_downsample` along an axis of size `n`."""
    return n // 2 if n % 2 == 0 else (n + 1) // 2
