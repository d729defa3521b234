"""Field laws: how a layer's feature map transforms when the input volume is moved by a cube
element g, and its invariant part.

An equivariant layer F with field law T satisfies F(g·x) = T_g F(x). Each law below is the
transformation of one kind of feature map `(B, channels..., D, H, W)` (leading batch axis):

* `Scalar`: scalar fields `(B, C, D, H, W)`: the spatial rotation only (`rotate_exact`). The law
  of GMR features and of invariant heads. `Scalar(exact=False)` marks it as a hypothesis ("the
  features rotate with the input"), e.g. for a plain CNN whose features are inspected anyway.
* `Regular(group)`: G-CNN fields `(B, C·N, D, H, W)` (orientation index minor) on a cube
  subgroup of order N: spatial rotation and the orientation axis permuted, the new index i
  holding the old index of g⁻¹h_i ([L_g f](x, h) = f(g⁻¹x, g⁻¹h)). Only for g in the group.
* `Irreps(irreps)`: steerable fields `(B, irreps.dim, D, H, W)` (e3nn `o3.Irreps` layout):
  spatial rotation and D_ρ(g) = `irreps.D_from_matrix(g)` on the channel axis (for the same
  matrix: e3nn's basis needs no change of frame, reflections act through the parities).
* `SO3Fourier()`: EquiLoPO SO(3)-function fields `(B, C, N_L, D, H, W)`: spatial rotation and
  f^l ↦ f^l D^l(R)ᵀ on the coefficient axis (`volrot.so3.wigner.rotate_coefficients`); L is read
  off N_L. Rotations only.

`invariant(f)` maps a field to rotation-invariant scalars per (channel, voxel), which then
transform by the spatial rotation alone: SO(3) functions → their RMS over SO(3); regular →
max over the orientation axis; irreps → the norm of every irrep field (scalars as they are);
scalars → themselves. `scalar_map(f)` is the per-channel map inspection montages show.

Axis convention: `volrot.so3.volume` (tensor axes (D, H, W) = (x, y, z)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from volrot.so3.groups import CubeElement, CubeGroup
from volrot.so3.volume import rotate_exact


@dataclass(frozen=True)
class Field:
    """Base of the field laws. `kind` names the law in reports; `exact` is False for a law
    that is only a hypothesis (plain CNN features)."""

    kind = "field"
    exact = True

    def transform(self, f: torch.Tensor, g: CubeElement) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def invariant(self, f: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def scalar_map(self, f: torch.Tensor) -> torch.Tensor:
        return self.invariant(f)

    def describe(self) -> str:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Scalar(Field):
    exact: bool = True
    kind = "spatial"

    def transform(self, f, g):
        return rotate_exact(f, g)

    def invariant(self, f):
        return f

    def describe(self) -> str:
        return "spatial only" + ("" if self.exact else " (no fiber action: plain CNN)")


@dataclass(frozen=True)
class Regular(Field):
    group: CubeGroup = None
    kind = "regular"

    def permutation(self, g: CubeElement) -> torch.Tensor:
        """perm[i] = index of g⁻¹h_i (a `KeyError` when g is not in the group)."""
        return torch.as_tensor(self.group.cayley[self.group.inverse[self.group.index(g)]])

    def transform(self, f, g):
        perm = self.permutation(g)
        f = rotate_exact(f, g)
        b, cn, *sp = f.shape
        n = self.group.order
        return f.reshape(b, cn // n, n, *sp)[:, :, perm].reshape(b, cn, *sp)

    def invariant(self, f):
        b, cn, *sp = f.shape
        return f.reshape(b, cn // self.group.order, self.group.order, *sp).amax(2)

    def describe(self) -> str:
        return "spatial + permutation of the group axis"


@dataclass(frozen=True)
class Irreps(Field):
    irreps: Any = None  # e3nn.o3.Irreps
    kind = "irreps"

    def transform(self, f, g):
        D = self.irreps.D_from_matrix(torch.as_tensor(g.matrix, dtype=torch.float64)).to(f.dtype)
        return torch.einsum("ij,bj...->bi...", D, rotate_exact(f, g))

    def invariant(self, f):
        parts = []
        for sl, (mul, ir) in zip(self.irreps.slices(), self.irreps):
            seg = f[:, sl].reshape(f.shape[0], mul, ir.dim, *f.shape[2:])
            parts.append(seg[:, :, 0] if ir.l == 0 else seg.norm(dim=2))
        return torch.cat(parts, 1)

    def describe(self) -> str:
        return "spatial + D_rho(R) on the irreps channels"


@dataclass(frozen=True)
class SO3Fourier(Field):
    kind = "so3"

    def transform(self, f, g):
        from volrot.so3.wigner import lmax_of, rotate_coefficients

        if not g.is_rotation:
            raise ValueError("SO(3)-Fourier fields transform under rotations only")
        f = rotate_exact(f, g)
        return rotate_coefficients(f.double(), lmax_of(f.shape[2]), g.matrix, dim=2).to(f.dtype)

    def invariant(self, f):
        from volrot.so3.wigner import mean_square

        return mean_square(f, dim=2).sqrt()

    def scalar_map(self, f):
        """The SO(3) mean f⁰ (it carries the sign)."""
        return f[:, :, 0]

    def describe(self) -> str:
        return "spatial + Wigner D on the coefficient columns"
