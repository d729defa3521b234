"""Rotation-invariant numbers of SO(3)-function fields `(B, C, N_L, D, H, W)` (per voxel).

A rotation acts on every degree block by f^l ↦ f^l D^l(R)ᵀ (the column index transforms, the
row index is inert; `volrot.so3.wigner`), so anything built from f^l (f^l)ᵀ is invariant:

* `power_spectrum`: per channel and degree, the RMS of the degree-l part on SO(3),
  √(‖f^l‖²_F/(2l+1) + ε) for l ≥ 1, and the (signed) mean f⁰ for l = 0. Σ_l of the squares
  is mean_Q f², so the spectrum says how the function's energy spreads over frequencies.
* `row_gram`: per channel and degree, the upper triangle of the row Gram matrix
  f^l (f^l)ᵀ/(2l+1): the inner products of the 2l+1 rows, each of which is a type-l
  vector. It contains the power spectrum (its trace) and the relative orientation of the
  rows.

Together with the SO(3) SoftMax (`activation.SO3SoftMax`, the paper's head) these are the
per-voxel invariants an EquiLoPO head can hand to its classifier.
"""

from __future__ import annotations

import torch

from volrot.so3.wigner import degree_slice

#: added under the square root of the spectrum: keeps the gradient bounded where f^l = 0
SPECTRUM_EPS = 1e-8


def power_spectrum(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """`(B, C, N_L, ...)` -> `(B, C, L+1, ...)`: f⁰ and √(‖f^l‖²/(2l+1) + ε) for l = 1..L."""
    parts = [x[:, :, :1]]
    for l in range(1, lmax + 1):
        power = x[:, :, degree_slice(l)].square().sum(2, keepdim=True) / (2 * l + 1)
        parts.append((power + SPECTRUM_EPS).sqrt())
    return torch.cat(parts, 2)


def gram_size(lmax: int) -> int:
    """Number of upper-triangle entries of the row Gram matrices of degrees 0..lmax."""
    return sum((2 * l + 1) * (2 * l + 2) // 2 for l in range(lmax + 1))


def row_gram(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """`(B, C, N_L, ...)` -> `(B, C, gram_size(L), ...)`: upper triangles of f^l (f^l)ᵀ/(2l+1)."""
    b, c, _, *spatial = x.shape
    parts = []
    for l in range(lmax + 1):
        n = 2 * l + 1
        f = x[:, :, degree_slice(l)].reshape(b, c, n, n, *spatial)  # rows a, columns (rotated) b
        g = torch.einsum("bcik...,bcjk...->bcij...", f, f) / n
        iu = torch.triu_indices(n, n)
        parts.append(g[:, :, iu[0], iu[1]])
    return torch.cat(parts, 2)
