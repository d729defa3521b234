"""How a layer's feature map transforms when the input volume is rotated by a grid rotation g.

A *fiber* describes the channel structure of one layer output; `transform(feature, g)` applies
the action T_g that an equivariant layer must satisfy, F(g·x) = T_g F(x):

* ``so3``: EquiLoPO SO(3)-function fields `(B, C, N_L, D, H, W)`: spatial rotation and
  f^l ↦ f^l D^l(R)ᵀ on the coefficient axis (`volrot.so3.wigner.rotate_coefficients`).
* ``regular``: G-CNN fields `(B, C·N, D, H, W)` (orientation index minor): spatial rotation and
  the orientation axis permuted, new index i holding the old index of r⁻¹h_i.
* ``irreps``: steerable fields `(B, irreps.dim, D, H, W)`: spatial rotation and D_ρ(R) on the
  channel axis (`irreps.D_from_matrix`).
* ``spatial``: scalar fields `(B, C, D, H, W)`: spatial rotation only. It is the correct action
  for GMR and for invariant heads; for a plain CNN (`exact=False`) it is only the hypothesis
  "features rotate with the input", reported as such.

`invariant(feature)` pools the fiber to one rotation-invariant scalar per (channel, voxel)
(SO(3) functions: their RMS over SO(3); regular: max over the group axis; irreps: the norm of
every irrep field; scalars: as is). Those maps transform by the spatial rotation alone: the
montage shows them, and their error is the documented fallback when no fiber action is known.

Axis convention: `volrot.so3.volume` (tensor axes (D, H, W) = (x, y, z)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from volrot.so3.sampling import GridRotation
from volrot.so3.volume import rotate_exact
from volrot.so3.wigner import degree_of_coefficient, n_coeffs, rotate_coefficients


def lmax_of(n: int) -> int:
    """Degree L with N_L = n coefficients (ValueError when n is not one of 1, 10, 35, 84, ...)."""
    for l in range(16):
        if n_coeffs(l) == n:
            return l
    raise ValueError(f"{n} is not a number of SO(3) coefficients N_L")


def invert(g: GridRotation, group: list[GridRotation]) -> GridRotation:
    """The element of `group` whose matrix is g⁻¹ = gᵀ."""
    target = g.matrix.T.astype(np.int64)
    for h in group:
        if np.array_equal(h.matrix.astype(np.int64), target):
            return h
    raise ValueError("inverse not in the group")


@dataclass
class Fiber:
    """The transformation law of one layer output (see the module docstring).

    `kind`: so3 | regular | irreps | spatial. `exact`: False when the law is an assumption (plain
    CNN). `order` (regular), `cayley`/`inverse`/`elements` (regular: the model's group tables),
    `irreps` (e3nn Irreps).
    """

    kind: str
    exact: bool = True
    group: Any = None  # volrot.models.gcnn.CubeSubgroup for ``regular``
    irreps: Any = None

    def describe(self) -> str:
        return {
            "so3": "spatial + Wigner D on the coefficient columns",
            "regular": "spatial + permutation of the group axis",
            "irreps": "spatial + D_rho(R) on the irreps channels",
            "spatial": "spatial only" + ("" if self.exact else " (no fiber action: plain CNN)"),
        }[self.kind]

    # ------------------------------------------------------------------ the action T_g
    def transform(self, f: torch.Tensor, g: GridRotation) -> torch.Tensor:
        """T_g f for a feature batch `f` (leading batch axis)."""
        f = rotate_exact(f, g)
        if self.kind == "so3":
            lmax = lmax_of(f.shape[2])
            return rotate_coefficients(f.double(), lmax, g.matrix, dim=2).to(f.dtype)
        if self.kind == "regular":
            perm = self._permutation(g)
            b, cn, *sp = f.shape
            n = self.group.order
            return f.reshape(b, cn // n, n, *sp)[:, :, perm].reshape(b, cn, *sp)
        if self.kind == "irreps":
            D = self.irreps.D_from_matrix(torch.as_tensor(g.matrix, dtype=torch.float64)).to(f.dtype)
            return torch.einsum("ij,bj...->bi...", D, f)
        return f

    def _permutation(self, g: GridRotation) -> torch.Tensor:
        mats = [h.matrix.astype(np.int64) for h in self.group.elements]
        idx = [i for i, m in enumerate(mats) if np.array_equal(m, g.matrix.astype(np.int64))]
        if not idx:
            raise ValueError(f"the rotation is not in the model's group {self.group.name}")
        r_inv = int(self.group.inverse[idx[0]])
        return torch.as_tensor(self.group.cayley[r_inv])  # perm[i] = index of r⁻¹h_i

    # ------------------------------------------------------------------ invariant pooling
    def invariant(self, f: torch.Tensor) -> torch.Tensor:
        """One rotation-invariant scalar per (channel, voxel): `(B, C', D, H, W)`."""
        if self.kind == "so3":
            w = 1.0 / (2 * degree_of_coefficient(lmax_of(f.shape[2])).to(f) + 1)
            return (f * f * w.view(1, 1, -1, 1, 1, 1)).sum(2).sqrt()
        if self.kind == "regular":
            b, cn, *sp = f.shape
            return f.reshape(b, cn // self.group.order, self.group.order, *sp).amax(2)
        if self.kind == "irreps":
            parts = []
            for sl, (mul, ir) in zip(self.irreps.slices(), self.irreps):
                seg = f[:, sl].reshape(f.shape[0], mul, ir.dim, *f.shape[2:])
                parts.append(seg[:, :, 0] if ir.l == 0 else seg.norm(dim=2))
            return torch.cat(parts, 1)
        return f

    def scalar_map(self, f: torch.Tensor) -> torch.Tensor:
        """The per-channel scalar field shown in the montage: the SO(3) mean f⁰ for ``so3`` (it
        carries the sign), otherwise `invariant(f)`."""
        return f[:, :, 0] if self.kind == "so3" else self.invariant(f)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(‖a − b‖ / ‖b‖, max |a − b| / max |b|), in float64; 0/0 counts as 0."""
    a, b = a.double(), b.double()
    d = a - b
    nb, mb = float(b.norm()), float(b.abs().max()) if b.numel() else 0.0
    rel = float(d.norm()) / nb if nb > 0 else float(d.norm())
    rel_max = float(d.abs().max()) / mb if mb > 0 else float(d.abs().max()) if d.numel() else 0.0
    return rel, rel_max
