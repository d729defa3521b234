"""The EquiLoPO SE(3) group convolution (and lifting) with CG-coupled, unconstrained filters.

Features are SO(3) functions per voxel: `(B, C, N_L, D, H, W)` (see `volrot.so3.wigner`).
For input degree l1, filter spatial degree l2 (≤ `filter_lmax`) and output degree l3
(|l1−l2| ≤ l3 ≤ l1+l2, l3 ≤ L_out), the layer computes (docs/equilopo-math.md §1.2)

    h^{l3}_{o;dn}(Δ) = Σ_{i,l1,l2,p} Σ_s A^{l1l2l3,p}_{oi;sd} Σ_{x∈3³} χ_p(x) Σ_a B^{l1l2l3}_{an}(x) f^{l1}_{i;sa}(Δ+x),
    B^{l1l2l3}_{an}(x) = Σ_m C^{l1l2l3}_{amn} Y_{l2m}(x/|x|),

i.e. the closed form of correlating with every rotated copy of an arbitrary band-limited filter
g(y, P) on R³ × SO(3). χ_p are the radial shells of the 3×3×3 cube (r² = 0, 1, 2, 3) and
Y_{l2>0} vanishes at the centre. The free weights A (row s → row d) are exactly the weights of the
authors' parameterisation w^{l1l2} projected onto the l3 ≤ L_out that are actually used: only
those ("live") weights are allocated. `paper_weight_count` gives the authors' count, which
includes the dead ones (l3 > L_out and the l2 > 0 centre shell).

Equivariance: rotating the input volume by a grid rotation R and every f^l by f^l ↦ f^l D^l(R)ᵀ
rotates the output the same way (tests/test_equilopo_layers.py).

Implementation, two exactly equivalent forms:

* dense (default; input degrees l1 < `factorize_from`): the kernel `(C_out·N_out, C_in·N_in, 3, 3, 3)`
  is built once per forward (one einsum per (l1, l3) pair), then one `F.conv3d`;
* factorised (l1 ≥ `factorize_from`): first the free mixing z_{o;d,q,a} = Σ_{i,s} A_{oi;sd}^q
  f_{i;sa} (one matmul), then the fixed CG⊗SH kernel B^q_{an}(x) as a conv3d with the
  (o, d) pairs as batch. For high l1 this costs a fraction of the dense block
  ((2l1+1)² input channels per dense kernel column group).

Stride 1, zero padding 1. Input degrees l1 > L_out + filter_lmax cannot reach any output and
are skipped (the input may already be truncated to degree `lin_used`).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from volrot.models.equilopo.activation import as_full_precision, full_precision
from volrot.models.equilopo.layout import as_conv_input, from_conv_output
from volrot.so3.volume import centred_coordinates
from volrot.so3.wigner import clebsch_gordan, degree_slice, n_coeffs, real_sh


class SO3Conv(nn.Module):
    """SE(3) group convolution between SO(3)-function fields of degrees ≤ `lin` and ≤ `lout`.

    With `lin = 0` it is the lifting convolution (paper Eq. 3): a scalar volume reshaped to
    `(B, C, 1, D, H, W)` is correlated with every rotated copy of the filter.
    """

    def __init__(self, in_channels: int, out_channels: int, lin: int, lout: int, filter_lmax: int = 2, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd (the kernel is centred on the voxel)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin, self.lout, self.filter_lmax, self.kernel_size = lin, lout, filter_lmax, kernel_size
        self.lin_used = min(lin, lout + filter_lmax)

        offsets = centred_coordinates((kernel_size,) * 3, dtype=torch.float64).reshape(-1, 3)  # conv3d weight order
        r2 = (offsets**2).sum(-1).round().long()
        self.shell_radii2 = sorted(set(r2.tolist()))
        sh = [real_sh(l2, offsets) for l2 in range(filter_lmax + 1)]  # (27, 2l2+1)

        self.weights = nn.ParameterDict()
        self._pairs: list[tuple[int, int]] = []
        fan = [0.0] * (lout + 1)
        bases = {}
        for l1 in range(self.lin_used + 1):
            for l3 in range(lout + 1):
                terms = [
                    (l2, rr)
                    for l2 in range(abs(l1 - l3), min(l1 + l3, filter_lmax) + 1)
                    for rr in self.shell_radii2
                    if not (l2 > 0 and rr == 0)
                ]
                if not terms:
                    continue
                basis = torch.zeros(len(terms), 2 * l1 + 1, 2 * l3 + 1, kernel_size**3, dtype=torch.float64)
                for q, (l2, rr) in enumerate(terms):
                    y = sh[l2] * (r2 == rr).unsqueeze(-1)  # (27, 2l2+1), shell-masked
                    basis[q] = torch.einsum("amn,xm->anx", clebsch_gordan(l1, l2, l3), y)
                bases[(l1, l3)] = basis
                # energy reaching one output coefficient per unit-variance input coefficient
                fan[l3] += in_channels * (2 * l1 + 1) * float((basis**2).sum((0, 1, 3)).mean())
        for (l1, l3), basis in bases.items():
            self.register_buffer(f"basis_{l1}_{l3}", basis.float(), persistent=False)
            std = 1.0 / math.sqrt(fan[l3])
            q, n1, n3 = basis.shape[:3]
            self.weights[f"{l1}_{l3}"] = nn.Parameter(torch.randn(out_channels, in_channels, q, n1, n3) * std)
            self._pairs.append((l1, l3))

    @property
    def live_weight_count(self) -> int:
        return sum(p.numel() for p in self.weights.values())

    @property
    def paper_weight_count(self) -> int:
        """The authors' count: C_in·C_out·Σ_{l1≤L_in} Σ_{l2≤L_f} (2l1+1)²(2l2+1)·P (P shells)."""
        per_pair = sum((2 * l1 + 1) ** 2 * (2 * l2 + 1) for l1 in range(self.lin + 1) for l2 in range(self.filter_lmax + 1))
        return self.in_channels * self.out_channels * per_pair * len(self.shell_radii2)

    #: input degrees from this one on use the factorised form (mixing matmul + fixed-kernel
    #: conv); None = all dense. On CPU the dense form measured faster (its conv3d has many
    #: channels; the factorised conv3d has 2l3+1 outputs), see changes/equilopo.md.
    factorize_from: int | None = None

    #: under bf16 autocast, the conv runs in bf16 only on volumes of at least this many voxels
    #: (per sample; 20³). bf16 rounds every output to 8 significant bits, differently for rotated
    #: copies of an input; the invariant head averages that rounding away over many voxels, but
    #: not over a few. Measured (8 blocks, 28³, untrained, docs/benchmarks.md): every conv in
    #: bf16 gives a logit invariance error of 3.1e-4; bf16 at 28³ only (the 14³…4³ stages, an
    #: eighth of the conv cost, in fp32) 1.3e-5. Without autocast everything is fp32.
    bf16_min_voxels: int = 8000

    def kernel(self, lin: int | None = None) -> torch.Tensor:
        """The dense conv3d kernel `(C_out·N_out, C_in·N_lin, k, k, k)` for input degrees ≤ `lin`
        (default: all used degrees)."""
        lin = self.lin_used if lin is None else lin
        co, ci, k = self.out_channels, self.in_channels, self.kernel_size
        ref = next(iter(self.weights.values()))
        rows = []
        for l3 in range(self.lout + 1):
            n3 = 2 * l3 + 1
            cols = []
            for l1 in range(lin + 1):
                n1 = 2 * l1 + 1
                key = f"{l1}_{l3}"
                if key in self.weights:
                    block = torch.einsum("oiqsd,qanx->odnisax", self.weights[key], getattr(self, f"basis_{l1}_{l3}"))
                    cols.append(block.reshape(co, n3 * n3, ci, n1 * n1, k**3))
                else:
                    cols.append(ref.new_zeros(co, n3 * n3, ci, n1 * n1, k**3))
            rows.append(torch.cat(cols, dim=3))
        kern = torch.cat(rows, dim=1)
        return kern.reshape(co * n_coeffs(self.lout), ci * n_coeffs(lin), k, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n, *spatial = x.shape
        if c != self.in_channels or n not in (n_coeffs(self.lin), n_coeffs(self.lin_used)):
            raise ValueError(f"expected (B, {self.in_channels}, {n_coeffs(self.lin)}, D, H, W), got {tuple(x.shape)}")
        pad = self.kernel_size // 2
        dense_lin = self.lin_used if self.factorize_from is None else min(self.lin_used, self.factorize_from - 1)
        if dense_lin >= 0:
            xd = as_conv_input(x[:, :, : n_coeffs(dense_lin)])
            with full_precision(x):  # the kernel is built in fp32 (its CG structure carries the equivariance)
                kern = self.kernel(dense_lin)
            bf16_ok = math.prod(spatial) >= self.bf16_min_voxels  # (only matters under autocast)
            with contextlib.nullcontext() if bf16_ok else full_precision(x):
                y = F.conv3d(xd if bf16_ok else as_full_precision(xd), kern, padding=pad)
            y = from_conv_output(y, self.out_channels)
        else:
            y = x.new_zeros(b, self.out_channels, n_coeffs(self.lout), *spatial)
        for l1 in range(dense_lin + 1, self.lin_used + 1):
            y = self._add_factorised(y, x, l1, pad)
        return y

    def _add_factorised(self, y: torch.Tensor, x: torch.Tensor, l1: int, pad: int) -> torch.Tensor:
        b, ci, _, *spatial = x.shape
        co, k, n1 = self.out_channels, self.kernel_size, 2 * l1 + 1
        # f^{l1}: rows s (inert) with the channels, columns a with the voxels
        f = x[:, :, degree_slice(l1)].reshape(b, ci * n1, n1 * math.prod(spatial))
        for l3 in range(self.lout + 1):
            key = f"{l1}_{l3}"
            if key not in self.weights:
                continue
            n3 = 2 * l3 + 1
            w = self.weights[key]  # (o, i, q, s, d)
            q = w.shape[2]
            mix = w.permute(0, 4, 2, 1, 3).reshape(co * n3 * q, ci * n1)
            z = torch.matmul(mix, f).reshape(b * co * n3, q * n1, *spatial)  # (b·o·d, q·a, ...)
            basis = getattr(self, f"basis_{l1}_{l3}")  # (q, a, n, x)
            kern = basis.permute(2, 0, 1, 3).reshape(n3, q * n1, k, k, k)
            h = F.conv3d(z, kern, padding=pad).reshape(b, co, n3 * n3, *y.shape[-3:])
            sl = degree_slice(l3)
            y = torch.cat([y[:, :, : sl.start], y[:, :, sl] + h, y[:, :, sl.stop :]], dim=2)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}->{self.out_channels}, L {self.lin}->{self.lout}, L_f={self.filter_lmax}, "
            f"k={self.kernel_size}, live={self.live_weight_count}, paper={self.paper_weight_count}"
        )
