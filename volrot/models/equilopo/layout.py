"""Memory layout of EquiLoPO features: logical shape `(B, C, N, D, H, W)`, stored voxel-major.

Every EquiLoPO layer sees features as `(B, C, N_L, D, H, W)` (channels, SO(3) coefficients,
voxels), but they are stored as a permuted view of a contiguous `(B, D, H, W, C, N)` block
("SO(3)-last"). In that layout

* merging `(C, N)` into conv channels is a view that is exactly torch's `channels_last_3d`
  format, which oneDNN's conv3d runs faster than the default layout (in bf16 several times
  faster, see docs/benchmarks.md), with no copy on the way in or out;
* the local activation works on rows `(B·D·H·W·C, N)`: one plain matrix product per sampling
  step instead of a batch of wide products over voxels;
* the per-function moments (a sum over N) read contiguous memory.

The layout is an implementation detail: values, shapes and the field laws are unchanged, and
every function here accepts any layout (it copies only when it must).
"""

from __future__ import annotations

import torch

_TO_LAST = (0, 3, 4, 5, 1, 2)  # (B, C, N, D, H, W) -> (B, D, H, W, C, N)
_FROM_LAST = (0, 4, 5, 1, 2, 3)  # (B, D, H, W, C, N) -> (B, C, N, D, H, W)


def is_so3_last(x: torch.Tensor) -> bool:
    """Whether a `(B, C, N, D, H, W)` tensor is stored SO(3)-last (a view of a contiguous block)."""
    return x.dim() == 6 and x.permute(*_TO_LAST).is_contiguous()


def so3_last(x: torch.Tensor) -> torch.Tensor:
    """`x` stored SO(3)-last (`x` itself when it already is)."""
    if is_so3_last(x):
        return x
    return x.permute(*_TO_LAST).contiguous().permute(*_FROM_LAST)


def to_rows(x: torch.Tensor) -> torch.Tensor:
    """`(B, C, N, D, H, W)` -> rows `(B·D·H·W·C, N)`, one SO(3) function per row (a view when
    `x` is SO(3)-last)."""
    return x.permute(*_TO_LAST).reshape(-1, x.shape[2])


def from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Rows `(B·D·H·W·C, M)` ordered like `to_rows(like)` -> `(B, C, M, D, H, W)` (a view,
    SO(3)-last)."""
    b, c, _, *spatial = like.shape
    return rows.view(b, *spatial, c, rows.shape[-1]).permute(*_FROM_LAST)


def capturing_graph() -> bool:
    """Whether the forward is being traced, scripted or exported (ONNX): layout hints and
    Python-level blocking are left out of graphs."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # a layout hint only: exporters (ONNX) have no memory formats, and the values are the same
    if capturing_graph():
        return x
    return x.contiguous(memory_format=torch.channels_last_3d)


def as_conv_input(x: torch.Tensor) -> torch.Tensor:
    """`(B, C, N, D, H, W)` -> conv3d input `(B, C·N, D, H, W)` in `channels_last_3d`."""
    x = so3_last(x)
    b, c, n, *spatial = x.shape
    return _channels_last(x.reshape(b, c * n, *spatial))


def from_conv_output(y: torch.Tensor, channels: int) -> torch.Tensor:
    """conv3d output `(B, C·N, D, H, W)` -> `(B, C, N, D, H, W)`, SO(3)-last."""
    b, cn, *spatial = y.shape
    return _channels_last(y).reshape(b, channels, cn // channels, *spatial)
