"""Linear layers on SO(3)-function fields `(B, C, N_L, D, H, W)`: batch norm, dropout, pooling.

All of them commute with rotations (input volume by a grid rotation R, coefficients
f^l ↦ f^l D^l(R)ᵀ), see docs/equilopo-math.md §1.7.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from volrot.models.equilopo.activation import as_full_precision, full_precision
from volrot.models.equilopo.layout import as_conv_input, from_conv_output
from volrot.models.symmetric_pool import symmetric_pool_geometry
from volrot.so3.wigner import mean_square


class SE3BatchNorm(nn.Module):
    """Per-channel batch norm of SO(3) functions (App. J.3, Eq. J6).

    μ_c = mean over batch and voxels of f⁰_c; s²_c = mean of Σ_l ‖f^l_c‖²/(2l+1) minus μ_c²;
    out = γ_c (f − μ_c δ_l0)/√(s²_c + ε) + β_c δ_l0. Only f⁰ is shifted, so the scaling is a
    rotation-invariant per-channel scalar. ε = 1e-5 (the authors' 1e-32 gives 0/0 on constant
    channels); running statistics with momentum 0.1.
    """

    def __init__(self, channels: int, lmax: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.lmax, self.eps, self.momentum = lmax, eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with full_precision(x):
            return self._forward(as_full_precision(x))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x[:, :, 0].mean(dim=(0, 2, 3, 4))
            second = mean_square(x, dim=2).mean(dim=(0, 2, 3, 4))
            var = second - mean * mean
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        shift = F.pad((self.bias - mean * scale).unsqueeze(1), (0, x.shape[2] - 1))  # (C, N), l=0 only
        return torch.addcmul(shift.view(1, *shift.shape, 1, 1, 1), x, scale.view(1, -1, 1, 1, 1, 1))


class SE3Dropout(nn.Module):
    """Drop whole SO(3) functions: one Bernoulli mask per (sample, channel, voxel), scaled by
    1/(1−p) (inverted dropout; the authors' code does not rescale)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        b, c, _, *spatial = x.shape
        keep = torch.empty(b, c, 1, *spatial, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SymmetricAvgPool(nn.Module):
    """Spatial average pooling by ~2 that keeps the cube symmetry (any size; the geometry of
    `volrot.models.symmetric_pool`; padding is not counted in the average). (The authors' avg_pool3d(2, 2) on 7³ drops the last slice and breaks the
    symmetry.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p = zip(*(symmetric_pool_geometry(n) for n in x.shape[3:]))
        y = F.avg_pool3d(as_conv_input(x), k, s, p, count_include_pad=False)
        return from_conv_output(y, x.shape[1])
