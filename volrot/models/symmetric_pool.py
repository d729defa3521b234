"""Downsampling by 2 that commutes with the cube group (90° rotations and axis flips).

A strided window keeps the symmetry only if the sampled positions are symmetric about the grid
centre (n-1)/2 of every spatial axis. With stride 2, a window of length L and padding (L-1)//2,
the samples sit at 2o + (L-1)/2 - (L-1)//2, i.e. at 2o for odd L and at 2o + ½ for even L; they
are symmetric about (n-1)/2 exactly when L has the parity of n:

- even n: 2×2×2 average pooling, stride 2 (windows {2i, 2i+1} tile the axis; output n/2);
- odd n: 3×3×3 average pooling, stride 2, padding 1 (window centres 0, 2, ..., n-1 include
  the grid centre; output (n+1)/2).

`symmetric_pool_geometry` is that rule (every ↓2 of volrot's symmetric models uses it: this
module's `symmetric_downsample` for gcnn and gmr, EquiLoPO's `SymmetricAvgPool`, the steerable
CNN's low-pass `Downsample`), so any cubic input works (28 -> 14 -> 7 -> 4 -> 2 ...). A fixed
stride-2 layer would break the symmetry on one of the two parities: stride 2 with "same"
padding on an even size samples 0, 2, ..., n-2, which is not symmetric about (n-1)/2. Non-cubic
inputs are pooled per axis with the same rule; they are then only symmetric under the elements
that keep their shape (e.g. D4 for a square prism).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_pool_geometry(n: int, window: int | None = None) -> tuple[int, int, int]:
    """(kernel, stride, padding) halving an axis of size `n` with samples symmetric about its
    centre. `window` is the kernel length (default 2 for even n, 3 for odd n); it must have the
    parity of n. A size-1 axis is left as is by the default window (torch's pooling refuses a
    window longer than its input)."""
    if window is None and n == 1:
        return 1, 1, 0
    window = (2 if n % 2 == 0 else 3) if window is None else int(window)
    if window % 2 != n % 2:
        raise ValueError(f"a window of {window} on {n} voxels samples off-centre (parities differ)")
    return window, 2, (window - 1) // 2


def symmetric_downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve the last three axes of `x` (B, C, D, H, W), keeping the cube-group symmetry
    (zero padding counted in the average)."""
    kernel, stride, padding = zip(*(symmetric_pool_geometry(n) for n in x.shape[-3:]))
    return F.avg_pool3d(x, kernel_size=kernel, stride=stride, padding=padding, count_include_pad=True)


def downsampled_size(n: int) -> int:
    """Output size of `symmetric_downsample` along an axis of size `n`."""
    return n // 2 if n % 2 == 0 else (n + 1) // 2
