"""`gmr`: GMR-Conv in 3D (Du et al. 2025): radially symmetric kernels in a 3D ResNet-18.

Kernel (paper Eq. 2, spherical shells instead of rings): for odd kernel size k, offsets
u ∈ {-(k-1)/2 .. (k-1)/2}³ and r = |u|,

    K_{o,i}(u) = mask(u) · Σ_s w_{o,i,s} · exp(-(r - μ_s)² / (2 σ_s²)),

with n = (k+1)/2 shells, centres μ_s = s·Δ, Δ = k / (2(n-1)) (0 .. k/2), and the corners outside
the inscribed sphere masked (mask = r ≤ k/2). The widths σ_s are per layer (shared by all channel
pairs), trainable as log σ (clamped to [1e-2, 2n]), initialised to σ = Δ / 2.355 (full width at
half maximum = shell spacing). Weights w have He variance for the *materialised* kernel:
Var(w) = 2 / (C_in · Σ_{u,s} G_s(u)²).

Two ways to compute the same convolution (`conv_form`):

- `dense`: materialise K (C_out, C_in, k, k, k) and call `conv3d` once;
- `shells`: depthwise `conv3d` of every input channel with the n shells (groups = C_in), then a
  1×1×1 conv with w; fewer multiply-adds (n·C_in·(k³ + C_out) per voxel instead of
  k³·C_in·C_out) but an n× larger intermediate activation.

`benchmarks/bench_gmr_forms.py` times both; the default is the one that measured faster on the
recipe's shapes (see changes/zoo.md for the numbers).

Symmetry. A kernel that depends only on |u| is unchanged by every signed permutation of the
axes, so each layer (stride 1, odd k, symmetric zero padding) commutes with the 48 elements of
the cube group (24 rotations and 24 reflections). Downsampling is `symmetric_downsample` (no
strided convs: 2×2×2 average pooling on even sizes, 3×3×3 stride 2 padding 1 on odd ones),
followed by a 1×1 conv in the shortcut; the head is global average pooling + linear. The logits
are therefore exactly invariant to the 48 grid symmetries for any cubic input size (28³ runs
28 -> 14 -> 7 -> 4), and only approximately invariant to other rotations. Being reflection
invariant, the model cannot tell mirror-image (chiral) classes apart, e.g. left/right organs.

Architecture: the MedMNIST ResNet-18 (stem conv stride 1, no max-pool, blocks [2, 2, 2, 2],
widths w·[1, 2, 4, 8]) with every conv a GMR conv; `kernel_sizes` gives the kernel size of the
four stages (the stem uses the first one).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from volrot.errors import UserError
from volrot.models.registry import register_model
from volrot.models.symmetric_pool import symmetric_downsample
from volrot.so3.fields import Scalar
from volrot.so3.groups import Symmetry, cube_group
from volrot.so3.volume import centred_coordinates

CONV_FORMS = ("dense", "shells")
#: the faster form in benchmarks/bench_gmr_forms.py on the recipe's shapes (CPU, see changes/zoo.md):
#: the depthwise 3D conv of the `shells` form, above all its backward, is far slower than a dense conv3d.
DEFAULT_CONV_FORM = "dense"


def shell_geometry(kernel_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Radii (k³,), mask (k³,), shell centres μ (n,) and the shell spacing Δ for an odd k."""
    k = kernel_size
    radii = centred_coordinates((k, k, k), dtype=torch.float64).norm(dim=-1).reshape(-1)
    mask = (radii <= k / 2 + 1e-9).to(torch.float64)
    n = (k + 1) // 2
    spacing = k / (2 * (n - 1)) if n > 1 else 1.0
    centres = torch.arange(n, dtype=torch.float64) * spacing
    return radii, mask, centres, spacing


class GMRConv3d(nn.Module):
    """Gaussian-mixture-shell convolution, stride 1, same padding: (B, C_in, ...) -> (B, C_out, ...)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, conv_form: str = DEFAULT_CONV_FORM):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise UserError(f"model.kernel_sizes must be positive odd integers, got {kernel_size}")
        if conv_form not in CONV_FORMS:
            raise UserError(f"model.conv_form must be one of {', '.join(CONV_FORMS)}, got {conv_form!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.conv_form = conv_form
        radii, mask, centres, spacing = shell_geometry(kernel_size)
        self.num_shells = n = centres.numel()
        self.register_buffer("radii", radii.float(), persistent=False)
        self.register_buffer("mask", mask.float(), persistent=False)
        self.register_buffer("centres", centres.float(), persistent=False)
        self.log_sigma = nn.Parameter(torch.full((n,), math.log(spacing / 2.355)))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, n))
        with torch.no_grad():
            energy = float((self.shells() ** 2).sum())
            self.weight.normal_(0.0, math.sqrt(2.0 / (in_channels * energy)))

    def shells(self) -> torch.Tensor:
        """The n masked Gaussian shells, (n, k³)."""
        sigma = self.log_sigma.exp().clamp(1e-2, 2.0 * self.num_shells)
        d = self.radii[None, :] - self.centres[:, None]
        return torch.exp(-0.5 * (d / sigma[:, None]) ** 2) * self.mask

    def dense_kernel(self) -> torch.Tensor:
        """The materialised kernel (C_out, C_in, k, k, k)."""
        k = self.kernel_size
        return torch.einsum("ois,su->oiu", self.weight, self.shells()).reshape(
            self.out_channels, self.in_channels, k, k, k
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, pad = self.kernel_size, self.kernel_size // 2
        if self.conv_form == "dense":
            return F.conv3d(x, self.dense_kernel(), padding=pad)
        n, c_in = self.num_shells, self.in_channels
        depthwise = self.shells().reshape(n, 1, k, k, k).repeat(c_in, 1, 1, 1, 1)  # channel c·n + s
        y = F.conv3d(x, depthwise, padding=pad, groups=c_in)
        return F.conv3d(y, self.weight.reshape(self.out_channels, c_in * n, 1, 1, 1))


class GMRBasicBlock(nn.Module):
    """ResNet basic block of GMR convs; `downsample` pools first, the shortcut is pool + 1×1 conv."""

    def __init__(self, in_planes: int, planes: int, kernel_size: int, downsample: bool, conv_form: str):
        super().__init__()
        self.downsample = downsample
        self.conv1 = GMRConv3d(in_planes, planes, kernel_size, conv_form)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = GMRConv3d(planes, planes, kernel_size, conv_form)
        self.bn2 = nn.BatchNorm3d(planes)
        if in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv3d(in_planes, planes, 1, bias=False), nn.BatchNorm3d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = symmetric_downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class GMRResNet3d(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int, kernel_sizes: Sequence[int], conv_form: str):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            GMRConv3d(in_channels, width, kernel_sizes[0], conv_form), nn.BatchNorm3d(width), nn.ReLU(inplace=True)
        )
        blocks = []
        in_planes = width
        for stage, (planes, k) in enumerate(zip(widths, kernel_sizes)):
            for j in range(2):
                blocks.append(GMRBasicBlock(in_planes, planes, k, stage > 0 and j == 0, conv_form))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_planes, num_classes)

    def equivariant_layers(self) -> list:
        """Every GMR conv and residual block: scalar fields (radial kernels, symmetric pooling)."""
        return [
            (name, m, Scalar())
            for name, m in self.named_modules()
            if isinstance(m, (GMRConv3d, GMRBasicBlock))
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3, 4)))


@register_model(
    "gmr",
    description="GMR-Conv 3D ResNet-18 (radial Gaussian-shell kernels); exactly invariant to the 48 grid symmetries",
    symmetry=lambda **_: Symmetry("Oh", cube_group("Oh")),
)
def gmr(
    *,
    num_classes: int,
    in_channels: int = 1,
    width: int = 16,
    kernel_sizes: Sequence[int] = (7, 7, 5, 5),
    conv_form: str = DEFAULT_CONV_FORM,
) -> nn.Module:
    """Options: `width` (stage widths w·[1,2,4,8]); `kernel_sizes` (4 odd sizes, one per stage);
    `conv_form` dense | shells (same result, different speed)."""
    if int(width) < 1:
        raise UserError(f"model.width must be a positive integer, got {width}")
    ks = [int(k) for k in (kernel_sizes if isinstance(kernel_sizes, (list, tuple)) else [kernel_sizes])]
    if len(ks) != 4 or any(k < 1 or k % 2 == 0 for k in ks):
        raise UserError(f"model.kernel_sizes must be 4 positive odd integers (one per stage), got {kernel_sizes}")
    if conv_form not in CONV_FORMS:
        raise UserError(f"model.conv_form must be one of {', '.join(CONV_FORMS)}, got {conv_form!r}")
    return GMRResNet3d(num_classes, in_channels, int(width), ks, conv_form)
