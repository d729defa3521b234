"""3D steerable CNN (Weiler, Geiger, Welling, Boomsma & Cohen, NeurIPS 2018) on `e3nn.o3` irreps.

Features are stacks of SO(3) irreducible fields typed by `e3nn.o3.Irreps`, laid out on the
channel axis of a `(B, irreps.dim, D, H, W)` tensor in e3nn's order (segment by segment,
multiplicity-major: channel = offset + u * (2l+1) + m).

Conventions (the same as the rest of volrot):

* tensor axes (D, H, W) are the coordinates (x, y, z); rotating a volume by R means
  out(R p) = in(p) about the grid centre (n-1)/2.
* A feature map f of irreps ρ transforms as  [g·f](q) = D_ρ(R) f(Rᵀ q),  where D_ρ(R) is
  `irreps.D_from_matrix(R)` **for the same matrix R**: no change of frame is needed. e3nn 0.6
  builds its real spherical harmonics in a y-up frame (the m = 0 harmonic is symmetric about
  the y axis), but takes and returns Cartesian (x, y, z) unchanged: `o3.spherical_harmonics(l, R v)
  = D^l(R) o3.spherical_harmonics(l, v)` with D^l = `Irreps(l).D_from_matrix(R)` and D^1(R) = R.
  The y-up choice only fixes *which* orthonormal basis of each degree-l space is used, and
  `wigner_3j` / `D_from_matrix` use that same basis. We therefore feed the kernel lattice
  offsets in (x, y, z) = (D, H, W) order straight into `o3.spherical_harmonics`
  (`tests/test_steerable.py::test_e3nn_frame_matches_volrot_axes` checks this on all 48 grid
  elements, reflections included).

Kernel basis (the paper's complete solution of κ(R u) = D_out(R) κ(u) D_in(R)ᵀ):
for an output field of degree lo and an input field of degree li,
    b_{m,J}(u)_{ij} = Σ_M  C^{lo,li,J}_{ijM} · φ_m(|u|) · Y^J_M(u/|u|),     |lo-li| ≤ J ≤ lo+li,
with C = `o3.wigner_3j(lo, li, J)`, Y = `o3.spherical_harmonics` (component normalisation),
Gaussian shells φ_m(r) = exp(-(r-m)²/(2·0.6²)) at integer radii m = 0..k//2, and the se3cnn
"compromise" band limit J ≤ J_max(m) = 0, 3, 5, 7, … (small shells carry only low degrees;
Y^{J>0} is 0 at the origin). Each basis kernel has unit norm; weights start as
N(0, (2lo+1)/fan_in) (fan_in = Σ over input fields of their basis sizes), which keeps unit
activation variance and lets the usual Adam learning rates (1e-3) work: se3cnn instead folds
that scale into the basis and starts weights at N(0, 1), which needs lr ≈ 0.1. The dense
`conv3d` kernel is materialised once per forward (one einsum per pair of irreps segments)
and applied with a single `F.conv3d` (zero "same" padding).

Parity: with `reflections=False` (default) every J above is used; the fields carry e3nn's
natural parity labels (0e, 1o, 2e) only as names, and the network is SO(3)-equivariant but not
reflection-equivariant, so its logits can tell mirror images apart (chiral labels, e.g. left
vs right organs). With `reflections=True` only the paths with p_out = p_in·(-1)^J are kept:
every layer is O(3)-equivariant and the logits are also invariant to reflections.

Downsampling is never a bare stride (the paper's Tetris ablation: 0.99 → 0.36 accuracy):
a low-pass (isotropic Gaussian, σ = 0.5·√(2²-1), or a box) followed by subsampling by 2 whose
sample points are symmetric about the grid centre for both even and odd sizes, so exact
equivariance to the 24 grid rotations survives every pooling step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from e3nn import nn as enn
from e3nn import o3

from volrot.errors import UserError
from volrot.models.registry import register_model
from volrot.models.symmetric_pool import symmetric_pool_geometry
from volrot.so3.fields import Irreps
from volrot.so3.groups import Symmetry, cube_group
from volrot.so3.volume import centred_coordinates

#: Width of the Gaussian radial shells, in voxels (se3cnn `kernel.py`).
SHELL_SIGMA = 0.6


def shell_bandlimit(m: int) -> int:
    """Highest harmonic degree J allowed on the radial shell at radius m (se3cnn "compromise")."""
    return 0 if m == 0 else 2 * m + 1


def _allowed_degrees(ir_out: o3.Irrep, ir_in: o3.Irrep, reflections: bool) -> list[int]:
    """Filter degrees J coupling input degree li to output degree lo (parity rule if reflections)."""
    degrees = range(abs(ir_out.l - ir_in.l), ir_out.l + ir_in.l + 1)
    if reflections:
        return [J for J in degrees if ir_out.p == ir_in.p * (-1) ** J]
    return list(degrees)


@lru_cache(maxsize=None)
def _pair_basis(ir_out: o3.Irrep, ir_in: o3.Irrep, kernel_size: int, reflections: bool) -> torch.Tensor:
    """Unit-norm steerable basis kernels, float64, shape (B, 2lo+1, 2li+1, k, k, k).

    Basis elements are indexed by (shell m, degree J) with J ≤ `shell_bandlimit(m)`.
    """
    lattice = centred_coordinates((kernel_size,) * 3, dtype=torch.float64)  # offsets u = (x, y, z)
    radius = lattice.norm(dim=-1)
    origin = radius == 0
    # Direction at the origin is undefined; any unit vector works since Y^{J>0} is zeroed there.
    direction = torch.where(origin[..., None], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), lattice)
    elements = []
    for m in range(kernel_size // 2 + 1):
        shell = torch.exp(-0.5 * ((radius - m) / SHELL_SIGMA) ** 2)
        for J in _allowed_degrees(ir_out, ir_in, reflections):
            if J > shell_bandlimit(m):
                continue
            Y = o3.spherical_harmonics(J, direction, normalize=True, normalization="component")
            if J > 0:
                Y = Y * (~origin)[..., None]
            C = o3.wigner_3j(ir_out.l, ir_in.l, J, dtype=torch.float64)
            b = torch.einsum("ijM,xyzM->ijxyz", C, Y * shell[..., None])
            norm = b.norm()
            if norm > 1e-9:
                elements.append(b / norm)
    if not elements:
        return torch.zeros(0, ir_out.dim, ir_in.dim, kernel_size, kernel_size, kernel_size, dtype=torch.float64)
    return torch.stack(elements)


class SteerableConv3d(nn.Module):
    """Equivariant voxel convolution between irreps-typed feature maps (stride 1, "same" padding).

    The weights of each (output segment, input segment) pair have shape (mul_out, mul_in, B);
    the dense kernel is Σ_b w_b · basis_b, assembled into a `(irreps_out.dim, irreps_in.dim, k, k, k)`
    tensor and applied with one `F.conv3d`. No bias (a batch norm follows every conv here).
    """

    def __init__(self, irreps_in, irreps_out, kernel_size: int = 5, reflections: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.kernel_size = kernel_size
        self.reflections = reflections
        k = kernel_size

        pair_basis = {}
        for i, (mul_o, ir_o) in enumerate(self.irreps_out):
            for j, (mul_i, ir_i) in enumerate(self.irreps_in):
                basis = _pair_basis(ir_o, ir_i, k, reflections)
                if basis.shape[0] and mul_o and mul_i:
                    pair_basis[(i, j)] = basis
        # fan-in per output segment: number of (input field, basis kernel) products summed.
        fan_in = {i: 0 for i in range(len(self.irreps_out))}
        for (i, j), basis in pair_basis.items():
            fan_in[i] += self.irreps_in[j].mul * basis.shape[0]

        self.pairs: list[tuple[int, int]] = sorted(pair_basis)
        self.weights = nn.ParameterList()
        for n, (i, j) in enumerate(self.pairs):
            (mul_o, ir_o), (mul_i, _) = self.irreps_out[i], self.irreps_in[j]
            basis = pair_basis[(i, j)]
            self.register_buffer(f"basis_{n}", basis.to(torch.get_default_dtype()).clone(), persistent=False)
            std = math.sqrt(ir_o.dim / fan_in[i])
            self.weights.append(nn.Parameter(torch.randn(mul_o, mul_i, basis.shape[0]) * std))

        # Carries dtype/device for `kernel()` even when no pair of segments can couple.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        self._out_slices = self.irreps_out.slices()
        self._in_slices = self.irreps_in.slices()

    def kernel(self) -> torch.Tensor:
        """The dense conv3d weight, shape (irreps_out.dim, irreps_in.dim, k, k, k).

        Built in the parameters' precision even under autocast (the conv itself may run in bf16).
        """
        k = self.kernel_size
        out = self._anchor.new_zeros(self.irreps_out.dim, self.irreps_in.dim, k, k, k)
        with torch.autocast(device_type=self._anchor.device.type, enabled=False):
            for n, (i, j) in enumerate(self.pairs):
                basis = getattr(self, f"basis_{n}")
                block = torch.einsum("uvb,bijxyz->uivjxyz", self.weights[n], basis)
                so, si = self._out_slices[i], self._in_slices[j]
                out[so, si] = block.reshape(so.stop - so.start, si.stop - si.start, k, k, k)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.kernel(), padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, kernel_size={self.kernel_size}, reflections={self.reflections}"


class ChannelsLast(nn.Module):
    """Apply an e3nn module (acting on the last axis) to a `(B, C, D, H, W)` feature map."""

    def __init__(self, module: nn.Module, irreps_in, irreps_out):
        super().__init__()
        self.module = module
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}"


def _downsample_taps(mode: str, even: bool) -> torch.Tensor:
    """1D low-pass taps for subsampling by 2; even-length taps for even sizes (centred between voxels)."""
    if mode == "avg":
        taps = torch.ones(2 if even else 3, dtype=torch.float64)
    else:  # Gaussian blur for scale 2 (se3cnn `low_pass_filter`): σ = 0.5·√(2²-1)
        sigma = 0.5 * math.sqrt(3.0)
        offsets = torch.arange(-2.5, 3.0, 1.0, dtype=torch.float64) if even else torch.arange(-2.0, 3.0, 1.0, dtype=torch.float64)
        taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


class Downsample(nn.Module):
    """Low-pass then subsample by 2, channel by channel, symmetric about the grid centre.

    `mode="blur"`: separable isotropic Gaussian (σ = √3/2 voxel); `mode="avg"`: box average.
    For an even size n the taps have even length and the kept samples sit at 2o + ½ (n → n/2);
    for an odd size they have odd length and sit at 2o (n → (n+1)/2). Either way the sampled
    points are mirror-symmetric about (n-1)/2, so the 24 grid rotations commute with this layer.
    A per-channel isotropic filter commutes with every D_ρ(R), so fields of any degree may pass.
    """

    def __init__(self, irreps, mode: str = "blur"):
        super().__init__()
        if mode not in ("blur", "avg"):
            raise ValueError(f"pooling must be 'blur' or 'avg', got {mode!r}")
        self.irreps_in = self.irreps_out = o3.Irreps(irreps)
        self.mode = mode
        dtype = torch.get_default_dtype()
        self.register_buffer("taps_even", _downsample_taps(mode, True).to(dtype), persistent=False)
        self.register_buffer("taps_odd", _downsample_taps(mode, False).to(dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        for axis in range(3):
            size = x.shape[2 + axis]
            taps = self.taps_even if size % 2 == 0 else self.taps_odd
            _, step, pad = symmetric_pool_geometry(size, taps.numel())
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = taps.numel()
            stride = [1, 1, 1]
            stride[axis] = step
            padding = [0, 0, 0]
            padding[axis] = pad
            weight = taps.view(shape).expand(channels, *shape[1:])
            x = F.conv3d(x, weight, stride=stride, padding=padding, groups=channels)
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def _natural_irrep(l: int) -> o3.Irrep:
    return o3.Irrep(l, (-1) ** l)


def stage_irreps(width: int, stage: int, lmax: int) -> tuple[o3.Irreps, o3.Irreps]:
    """(scalars, gated) fields of a stage: width·2^stage scalars, halved per degree (at least 1)."""
    base = width * 2**stage
    scalars = o3.Irreps([(base, _natural_irrep(0))])
    gated = o3.Irreps([(max(1, base // 2**l), _natural_irrep(l)) for l in range(1, lmax + 1)])
    return scalars, gated


class SteerableCNN(nn.Module):
    """Gated steerable CNN: [conv → BN → gate] × blocks, then low-pass ↓2, for 3 stages; head.

    Head: a steerable conv to scalar fields only, BN, SiLU, global average pooling, dropout,
    linear. `layers` lists every equivariant layer in order (each has `irreps_in`/`irreps_out`),
    so feature maps can be checked layer by layer.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        width: int,
        lmax: int,
        blocks: int,
        kernel_size: int,
        pooling: str,
        reflections: bool,
        dropout: float,
        stages: int = 3,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        irreps = o3.Irreps([(in_channels, _natural_irrep(0))])
        for s in range(stages):
            scalars, gated = stage_irreps(width, s, lmax)
            for _ in range(blocks):
                gates = o3.Irreps([(gated.num_irreps, _natural_irrep(0))]) if gated.num_irreps else o3.Irreps("")
                gate = enn.Gate(scalars, [F.silu], gates, [torch.sigmoid] * len(gates), gated)
                layers.append(SteerableConv3d(irreps, gate.irreps_in, kernel_size, reflections))
                layers.append(ChannelsLast(enn.BatchNorm(gate.irreps_in), gate.irreps_in, gate.irreps_in))
                layers.append(ChannelsLast(gate, gate.irreps_in, gate.irreps_out))
                irreps = gate.irreps_out
            layers.append(Downsample(irreps, pooling))
        head_irreps = o3.Irreps([(2 * width * 2 ** (stages - 1), _natural_irrep(0))])
        layers.append(SteerableConv3d(irreps, head_irreps, min(3, kernel_size), reflections))
        layers.append(ChannelsLast(enn.BatchNorm(head_irreps), head_irreps, head_irreps))
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_irreps.dim, num_classes)

    def equivariant_layers(self) -> list:
        """Every layer of `layers` with its irreps field law."""
        return [(f"layers.{i}", m, Irreps(irreps=m.irreps_out)) for i, m in enumerate(self.layers)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar feature maps before global pooling, shape (B, head channels, d, h, w)."""
        for layer in self.layers:
            x = layer(x)
        return F.silu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3, 4))
        return self.fc(self.dropout(pooled))


@register_model(
    "steerable",
    description="3D steerable CNN (Weiler et al. 2018) on e3nn irreps: gated, band-limited, blur-pooled; SO(3)-equivariant",
    symmetry=lambda reflections=False, **_: Symmetry(
        "O(3)" if reflections else "SO(3)", cube_group("Oh" if reflections else "O"), continuous=True
    ),
)
def steerable(
    *,
    num_classes: int,
    in_channels: int = 1,
    width: int = 8,
    lmax: int = 2,
    blocks: int = 1,
    kernel_size: int = 5,
    pooling: str = "blur",
    reflections: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """Options: `width` scales the field multiplicities (stage s has width·2^s scalars and
    width·2^s/2^l fields of degree l); `lmax` is the highest feature degree; `blocks` is the
    number of gated conv blocks per stage (3 stages); `kernel_size` is odd (≥ 5 lets degree-2
    fields couple through J up to 4); `pooling` is `blur` (Gaussian) or `avg` (box) before every
    subsampling; `reflections=True` makes the model O(3)- instead of SO(3)-equivariant."""
    width, lmax, blocks, kernel_size = int(width), int(lmax), int(blocks), int(kernel_size)
    if width < 1:
        raise UserError(f"model.width must be a positive integer, got {width}")
    if not 0 <= lmax <= 4:
        raise UserError(f"model.lmax must be between 0 and 4, got {lmax}")
    if blocks < 1:
        raise UserError(f"model.blocks must be a positive integer, got {blocks}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise UserError(f"model.kernel_size must be odd and at least 3, got {kernel_size}")
    if pooling not in ("blur", "avg"):
        raise UserError(f"model.pooling must be 'blur' or 'avg', got {pooling!r}")
    if not isinstance(reflections, bool):
        raise UserError(f"model.reflections must be true or false, got {reflections!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout}")
    return SteerableCNN(num_classes, in_channels, width, lmax, blocks, kernel_size, pooling, reflections, float(dropout))
