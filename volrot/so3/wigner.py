"""Real Wigner-D matrices, Clebsch–Gordan coefficients and spherical harmonics (on `e3nn.o3`).

Conventions (used by every SO(3)-Fourier model in volrot, see docs/equilopo-math.md §1.1):

* Frame: vectors are (x, y, z) = the tensor axes (D, H, W) of a volume (`volrot.so3.volume`).
* `real_sh(l, xyz)`: e3nn's real spherical harmonics, **orthonormal on the sphere**
  (∫ Y_lm Y_lm' dΩ = δ_mm', e3nn ``normalization="integral"``), evaluated in that frame.
  Y is set to 0 at the origin for l > 0 (and to 1/√(4π) for l = 0).
* `wigner_D(l, R)`: the real, orthogonal, homomorphic matrix with Y_l(R x) = D^l(R) Y_l(x).
  It is computed by fitting e3nn's harmonics in float64 (exact to ~1e-15; e3nn's own
  `D_from_matrix` goes through float32 tables and is only good to ~1e-7).
* `clebsch_gordan(l1, l2, l3)`: e3nn's `wigner_3j` times √(2l3+1), so that
  Σ_ab C_abc C_abc' = δ_cc' and D^l1(Q)_aa' D^l2(Q)_bb' = Σ_l3 Σ_cc' C_abc D^l3(Q)_cc' C_a'b'c'.
  (e3nn's `wigner_3j` itself has unit Frobenius norm.)
* SO(3) functions: f(Q) = Σ_l tr(f^l D^l(Q)) = Σ_l Σ_ab f^l_ab D^l_ba(Q). Coefficients of
  degrees 0..L are stored flat, N_L = Σ_l (2l+1)² entries, degree l at
  `[l(4l²-1)/3, (l+1)(4(l+1)²-1)/3)`, each (2l+1)×(2l+1) block row-major (row a, column b).
* Rotating by R acts as (R·f)(x, Q) = f(R⁻¹x, R⁻¹Q), i.e. f^l ↦ f^l D^l(R)ᵀ: the **column**
  index transforms and the row index is inert (`rotate_coefficients`).
* Moments: mean_Q f = f^0, mean_Q f² = Σ_l ‖f^l‖²_F / (2l+1).

The EquiLoPO paper's (authors') convention differs only by a fixed orthogonal change of SH
basis per degree: `paper_sh` is their harmonic (Condon–Shortley phase, index l+m the cos(mφ) term,
l−m the sin(|m|φ) term, polar axis z, φ = atan2(y, x)), `paper_basis(l)` the matrix M_l
with Y_paper = M_l Y_e3nn, and `to_paper_coefficients` maps f^l ↦ M_l f^l M_lᵀ.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from volrot.so3.sampling import haar_matrices

# e3nn (≈1.5 s to import) is imported where it is used, so `import volrot.models` stays fast.

# ----------------------------------------------------------------------------- bookkeeping


def n_coeffs(lmax: int) -> int:
    """N_L = Σ_{l≤L} (2l+1)² = (L+1)(2L+1)(2L+3)/3 (1, 10, 35, 84, 165 for L = 0..4)."""
    return (lmax + 1) * (2 * lmax + 1) * (2 * lmax + 3) // 3


def degree_offset(l: int) -> int:
    """Start of degree l in the flat coefficient axis: l(4l²−1)/3."""
    return l * (4 * l * l - 1) // 3


def degree_slice(l: int) -> slice:
    return slice(degree_offset(l), degree_offset(l + 1))


def degree_of_coefficient(lmax: int) -> torch.Tensor:
    """Degree l of every flat coefficient index, shape (N_L,)."""
    return torch.cat([torch.full(((2 * l + 1) ** 2,), l, dtype=torch.long) for l in range(lmax + 1)])


# ----------------------------------------------------------------------------- e3nn wrappers


def real_sh(l: int, xyz: torch.Tensor) -> torch.Tensor:
    """Orthonormal real spherical harmonics of degree l at directions `xyz` (..., 3) -> (..., 2l+1).

    Only the direction of `xyz` matters; at the origin Y_0 = 1/√(4π) and Y_{l>0} = 0.
    """
    from e3nn import o3

    xyz = torch.as_tensor(xyz)
    norm = xyz.norm(dim=-1, keepdim=True)
    safe = torch.where(norm > 0, xyz, torch.ones_like(xyz))
    y = o3.spherical_harmonics(l, safe, normalize=True, normalization="integral")
    if l > 0:
        y = torch.where(norm > 0, y, torch.zeros_like(y))
    return y


@functools.lru_cache(maxsize=None)
def _fit_points(l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed directions and the pseudo-inverse of their SH matrix (float64), for fitting D."""
    g = torch.Generator().manual_seed(1234 + l)
    pts = torch.randn(4 * (2 * l + 1) + 8, 3, generator=g, dtype=torch.float64)
    pts = pts / pts.norm(dim=-1, keepdim=True)
    return pts, torch.linalg.pinv(real_sh(l, pts))


def wigner_D(l: int, rotation) -> torch.Tensor:
    """Real Wigner matrix D^l(R), shape (..., 2l+1, 2l+1), float64, with Y_l(R x) = D^l(R) Y_l(x).

    `rotation`: rotation matrices (..., 3, 3) (numpy or torch). D is orthogonal and
    D(R1 R2) = D(R1) D(R2).
    """
    R = torch.as_tensor(np.asarray(rotation, dtype=np.float64) if not torch.is_tensor(rotation) else rotation)
    R = R.to(torch.float64)
    pts, pinv = _fit_points(l)
    rotated = torch.einsum("...ij,pj->...pi", R, pts)  # R x_p
    # Y(R X) = Y(X) Dᵀ  =>  Dᵀ = pinv(Y(X)) Y(R X)
    return torch.einsum("np,...pm->...mn", pinv, real_sh(l, rotated))


@functools.lru_cache(maxsize=None)
def _cg(l1: int, l2: int, l3: int) -> torch.Tensor:
    from e3nn import o3

    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1)


def clebsch_gordan(l1: int, l2: int, l3: int) -> torch.Tensor:
    """Real CG tensor C^{l1 l2 l3}, shape (2l1+1, 2l2+1, 2l3+1), float64, Σ_ab C_abc C_abc' = δ_cc'.

    Zero unless |l1−l2| ≤ l3 ≤ l1+l2. Invariant: Σ D1_aa' D2_bb' D3_cc' C_a'b'c' = C_abc.
    """
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        return torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.float64)
    return _cg(l1, l2, l3).clone()


# ----------------------------------------------------------------------------- SO(3) functions


def wigner_blocks(lmax: int, rotation) -> torch.Tensor:
    """D^l(R)_ba for every flat coefficient (l, a, b): shape (..., N_L), float64.

    With it, f(R) = Σ_i f_i · wigner_blocks(L, R)_i (the "sampling" row of R).
    """
    parts = []
    for l in range(lmax + 1):
        D = wigner_D(l, rotation)
        parts.append(D.transpose(-1, -2).reshape(*D.shape[:-2], -1))  # index (a, b) -> D_ba
    return torch.cat(parts, dim=-1)


def evaluate(coeffs: torch.Tensor, lmax: int, rotations, dim: int = -1) -> torch.Tensor:
    """Values f(Q_k) of SO(3) functions at rotations Q_k (K, 3, 3); the coefficient axis `dim`
    becomes an axis of length K."""
    S = wigner_blocks(lmax, rotations).to(coeffs.dtype)  # (K, N)
    x = coeffs.movedim(dim, -1)
    return torch.einsum("...n,kn->...k", x, S).movedim(-1, dim)


def rotate_coefficients(coeffs: torch.Tensor, lmax: int, rotation, dim: int = -1) -> torch.Tensor:
    """Coefficients of the rotated function Q ↦ f(R⁻¹Q): f^l ↦ f^l D^l(R)ᵀ (columns transform)."""
    x = coeffs.movedim(dim, -1)
    out = []
    for l in range(lmax + 1):
        n = 2 * l + 1
        D = wigner_D(l, rotation).to(coeffs.dtype)
        block = x[..., degree_slice(l)].reshape(*x.shape[:-1], n, n)
        out.append(torch.einsum("...ab,cb->...ac", block, D).reshape(*x.shape[:-1], n * n))
    return torch.cat(out, dim=-1).movedim(-1, dim)


@functools.lru_cache(maxsize=None)
def _degree_weights(lmax: int, from_degree: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # cached: a first call under inference_mode must not make
        # an inference tensor that later autograd (training after prediction) cannot save
        w = 1.0 / (2.0 * degree_of_coefficient(lmax).to(torch.float64) + 1.0)
        w[: degree_offset(from_degree)] = 0.0
        return w.to(device=device, dtype=dtype)


def degree_weights(lmax: int, from_degree: int = 0, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """1/(2l+1) per flat coefficient of degree l >= `from_degree` (0 below), shape (N_L,):
    Σ_i w_i f_i² = mean_Q f(Q)² (over the degrees kept). Cached per (dtype, device)."""
    return _degree_weights(lmax, from_degree, dtype, torch.device(device or "cpu"))


def lmax_of(n: int) -> int:
    """Degree L with N_L = n coefficients (ValueError when n is not one of 1, 10, 35, 84, ...)."""
    for l in range(16):
        if n_coeffs(l) == n:
            return l
    raise ValueError(f"{n} is not a number of SO(3) coefficients N_L")


def mean_square(coeffs: torch.Tensor, dim: int = -1, *, from_degree: int = 0, keepdim: bool = False) -> torch.Tensor:
    """The SO(3) second moment: mean_Q f(Q)² = Σ_l ‖f^l‖²_F / (2l+1) (Haar measure normalised
    to 1), summed over the degrees l >= `from_degree` (1 gives the variance over SO(3), since
    mean_Q f = f⁰). The degree L is read off the size of the coefficient axis `dim`.

    The one implementation of this moment in volrot (batch norm, activation normalisers,
    SoftMax, the invariant part of SO(3)-Fourier fields, inspection).
    """
    dim = dim % coeffs.dim()
    w = degree_weights(lmax_of(coeffs.shape[dim]), from_degree, dtype=coeffs.dtype, device=coeffs.device)
    w = w.view(-1, *([1] * (coeffs.dim() - dim - 1)))
    return (coeffs * coeffs * w).sum(dim, keepdim=keepdim)


def product_cg(f: torch.Tensor, lf: int, g: torch.Tensor, lg: int, lout: int | None = None) -> torch.Tensor:
    """Coefficients of the pointwise product f·g on SO(3), by the CG rule (coefficient axis last).

    (f·g)^{l3}_ef = Σ_{l1,l2} Σ_abcd C^{l1l2l3}_ace C^{l1l2l3}_bdf f^{l1}_ab g^{l2}_cd, degrees
    up to `lout` (default lf + lg, the exact band limit). Block einsums, one per (l1, l2, l3):
    the reference implementation (the models use the faster exact sample-space path of
    `SO3Resampler`, which is tested against this).
    """
    lout = lf + lg if lout is None else lout
    batch = torch.broadcast_shapes(f.shape[:-1], g.shape[:-1])
    blocks = [torch.zeros(*batch, (2 * l + 1) ** 2, dtype=f.dtype, device=f.device) for l in range(lout + 1)]
    for l1 in range(lf + 1):
        f1 = f[..., degree_slice(l1)].reshape(*f.shape[:-1], 2 * l1 + 1, 2 * l1 + 1)
        for l2 in range(lg + 1):
            g2 = g[..., degree_slice(l2)].reshape(*g.shape[:-1], 2 * l2 + 1, 2 * l2 + 1)
            for l3 in range(abs(l1 - l2), min(l1 + l2, lout) + 1):
                C = clebsch_gordan(l1, l2, l3).to(f.dtype).to(f.device)
                t = torch.einsum("ace,bdf,...ab,...cd->...ef", C, C, f1, g2)
                blocks[l3] = blocks[l3] + t.reshape(*batch, -1)
    return torch.cat(blocks, dim=-1)


# ----------------------------------------------------------------------------- exact resampling


class SO3Resampler:
    """Exact passage between Wigner coefficients and values at fixed rotations.

    `values(f)` evaluates degree-≤L_in functions at K fixed rotations; `coefficients(v)` maps
    values of a degree-≤L_out function at the same rotations back to its coefficients
    (pseudo-inverse of a full-rank K×N_{L_out} sampling matrix, so it is exact for every
    degree-≤L_out function). A polynomial of degree d in f is band-limited to d·L_in, so
    "evaluate, apply the polynomial pointwise, transform back" computes its coefficients
    exactly (up to float rounding): this is how the local activation does its CG product with
    two small matmuls instead of a loop over CG entries.

    The rotations are picked greedily (pivoted QR) from a seeded Haar pool of 8·N_{L_out}, which
    keeps the sampling matrix well conditioned (`condition` reports it).
    """

    def __init__(self, lin: int, lout: int, oversample: float = 1.0, seed: int = 0):
        from scipy.linalg import qr

        n_out = n_coeffs(lout)
        k = max(n_out, int(math.ceil(oversample * n_out)))
        pool = torch.as_tensor(haar_matrices(8 * n_out, seed))
        rows = wigner_blocks(lout, pool)  # (pool, N_out)
        weights = torch.sqrt(2.0 * degree_of_coefficient(lout).double() + 1.0)
        _, _, piv = qr((rows * weights).numpy().T, pivoting=True, mode="economic")
        chosen = np.sort(piv[:k])
        self.rotations = pool[chosen]
        S = rows[chosen]
        self.sample_in = S[:, : n_coeffs(lin)].clone()  # (K, N_in) float64
        self.analysis = torch.linalg.pinv(S)  # (N_out, K) float64
        sv = torch.linalg.svdvals(S * weights)
        self.condition = float(sv[0] / sv[-1])
        self.lin, self.lout, self.k = lin, lout, k


# ----------------------------------------------------------------------------- the paper's convention


def paper_sh(l: int, xyz: torch.Tensor) -> torch.Tensor:
    """The authors' real SH (docs/equilopo-math.md §1.1), float64, orthonormal on the sphere.

    Polar axis z, φ = atan2(y, x), Condon–Shortley phase included (Y_{1,−1} ∝ −y, Y_{1,0} ∝ z,
    Y_{1,1} ∝ −x); index l+m holds √2 N P_l^m(cos θ) cos(mφ), index l−m the sin(mφ) term.
    """
    from scipy.special import factorial, lpmv

    xyz = torch.as_tensor(xyz, dtype=torch.float64)
    r = xyz.norm(dim=-1).clamp_min(1e-300)
    cos_t = (xyz[..., 2] / r).clamp(-1, 1).numpy()
    phi = torch.atan2(xyz[..., 1], xyz[..., 0]).numpy()
    out = np.zeros(xyz.shape[:-1] + (2 * l + 1,))
    for m in range(l + 1):
        norm = math.sqrt((2 * l + 1) / (4 * math.pi) * factorial(l - m) / factorial(l + m))
        p = norm * lpmv(m, l, cos_t)  # includes the Condon–Shortley phase (−1)^m
        if m == 0:
            out[..., l] = p
        else:
            out[..., l + m] = math.sqrt(2) * p * np.cos(m * phi)
            out[..., l - m] = math.sqrt(2) * p * np.sin(m * phi)
    return torch.as_tensor(out)


@functools.lru_cache(maxsize=None)
def _paper_basis(l: int) -> torch.Tensor:
    pts, pinv = _fit_points(l)
    return (pinv @ paper_sh(l, pts)).T.contiguous()


def paper_basis(l: int) -> torch.Tensor:
    """Orthogonal M_l (float64) with paper_sh(l, x) = M_l real_sh(l, x).

    Consequently D_paper(R) = M_l D(R) M_lᵀ, C_paper = C ×₁ M_l1 ×₂ M_l2 ×₃ M_l3, and the
    coefficients of one SO(3) function convert as f^l_paper = M_l f^l M_lᵀ.
    """
    return _paper_basis(l).clone()


def to_paper_coefficients(coeffs: torch.Tensor, lmax: int, dim: int = -1, inverse: bool = False) -> torch.Tensor:
    """Convert flat SO(3) coefficients between this module's basis and the paper's
    (f^l ↦ M_l f^l M_lᵀ; `inverse=True` maps back)."""
    x = coeffs.movedim(dim, -1)
    out = []
    for l in range(lmax + 1):
        n = 2 * l + 1
        M = paper_basis(l).to(coeffs.dtype).to(coeffs.device)
        if inverse:
            M = M.T
        block = x[..., degree_slice(l)].reshape(*x.shape[:-1], n, n)
        out.append((M @ block @ M.T).reshape(*x.shape[:-1], n * n))
    return torch.cat(out, dim=-1).movedim(-1, dim)
