"""Nonlinearities on SO(3) functions: local polynomial ReLU, SO(3) SoftMax, global gate.

Local activation (docs/equilopo-math.md §1.4): σ(f)(Q) = n·P(f(Q)/n) pointwise on SO(3), with
P(y) = c0 + c1 y + c2 y². The result is band-limited to degree 2L (degree doubling). The
normaliser n and the adaptive coefficients are computed per (sample, channel, voxel) and are
constants in backprop (detached), as in the authors' code.

* ``adaptive``: μ = f⁰, σ² = Σ_{l≥1} ‖f^l‖²/(2l+1), n = max(3σ, 1e-12), a = μ/n; the L2 fit of ReLU
  on [a−1, a+1] (paper Eq. 15); P(y) = 0.01·y when μ+3σ ≤ 0, P(y) = y when μ−3σ ≥ 0.
* ``constant``: n = ‖f‖₂/3 with ‖f‖₂² = 8π² Σ ‖f^l‖²/(2l+1), c = (3/32, 1/2, 15/32).
* ``trainable``: as constant, c = (3/32, 1/2, 15/32) + θ, θ ∈ R³ a parameter of the layer
  (initialised to 0; the authors' code draws θ ~ U[0, 1)).

How it is computed: f is evaluated at K fixed rotations (one matmul with a (K, N_L) Wigner
sampling matrix), P is applied to the K values, and the values are mapped back to degree-2L
coefficients (one matmul with the pseudo-inverse of a full-rank sampling matrix). Because
n·P(f/n) is exactly band-limited to 2L this equals the CG-product formula
σ(f)^l = n c0 δ_l0 + c1 f^l + (c2/n)(f·f)^l to float rounding (tested against
`volrot.so3.wigner.product_cg`), with no loop over CG entries and K ≈ N_2L values per function.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from volrot.models.equilopo.layout import capturing_graph, from_rows, so3_last, to_rows
from volrot.so3.wigner import SO3Resampler, mean_square, n_coeffs

COEFFICIENT_TYPES = ("adaptive", "constant", "trainable")
_CONST = (3.0 / 32.0, 0.5, 15.0 / 32.0)
_RESAMPLERS: dict[tuple[int, int], SO3Resampler] = {}


def full_precision(x: torch.Tensor):
    """Context for code that must run in float32 under autocast (polynomials of the features,
    normalisers, batch statistics: fp16/bf16 would overflow v² and break the invariance).
    Use with `as_full_precision(x)` on the inputs. A no-op when autocast is off."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def as_full_precision(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _resampler(lin: int, lout: int) -> SO3Resampler:
    if (lin, lout) not in _RESAMPLERS:
        _RESAMPLERS[(lin, lout)] = SO3Resampler(lin, lout)
    return _RESAMPLERS[(lin, lout)]


def adaptive_coefficients(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares quadratic fit of ReLU(y) on [a−1, a+1] (paper Eq. 15)."""
    a2 = a * a
    c0 = (15 * a2**3 - 27 * a2 * a2 + 9 * a2 + 3) / 32
    c1 = 0.5 - 3 * a / 16 + 13 * a * a2 / 8 - 15 * a * a2 * a2 / 16
    c2 = 15 * (1 - a2) ** 2 / 32
    return c0, c1, c2


#: rows per block of the activation on the CPU: its (rows, K) intermediates stay a few MB
#: (cache-sized) instead of hundreds of MB per layer at 28³ (measured 1.1-1.3× faster
#: on this step, and a lower peak memory). GPUs, tracing, export and torch.compile see one
#: block (no Python loop, no extra kernel launches).
CHUNK_ROWS = 8192


def _blocks(rows: int, device: torch.device):
    """Row slices of the activation's blocks (one slice off the CPU, or when tracing or compiling)."""
    if rows <= CHUNK_ROWS or device.type != "cpu" or capturing_graph() or torch.compiler.is_compiling():
        return [slice(0, rows)]
    return [slice(i, min(i + CHUNK_ROWS, rows)) for i in range(0, rows, CHUNK_ROWS)]


def _rows(t: torch.Tensor, sl: slice) -> torch.Tensor:
    return t[sl] if t.dim() else t


def _polynomial_block(x, n, c0, c1, c2, S, A, out=None):
    out = torch.matmul(torch.matmul(x, S.T).square_(), A.T, out=out)
    out.mul_(c2 / n)
    m = min(x.shape[1], out.shape[1])
    out[:, :m].addcmul_(x[:, :m], c1)
    out[:, :1].add_(n * c0)
    return out


def _polynomial_on_so3(x, n, c0, c1, c2, S, A):
    """The forward of `_PolynomialOnSO3` (plain tensor ops; used directly without autograd, so
    that tracing/export sees no custom Function). x: rows (R, N); n, c0..c2: (R, 1) or scalars."""
    blocks = _blocks(x.shape[0], x.device)
    if len(blocks) == 1:
        return _polynomial_block(x, n, c0, c1, c2, S, A)
    out = x.new_empty(x.shape[0], A.shape[0])
    for sl in blocks:
        _polynomial_block(x[sl], _rows(n, sl), _rows(c0, sl), _rows(c1, sl), _rows(c2, sl), S, A, out=out[sl])
    return out


class _PolynomialOnSO3(torch.autograd.Function):
    """out = (n c0 + c1 v + (c2/n) v²)·Aᵀ with v = x·Sᵀ, per row of x (R, N): one SO(3)
    function per row (`volrot.models.equilopo.layout.to_rows`), in blocks of `CHUNK_ROWS` rows.

    A·S = I on degree ≤ L and A·1 = e_0 (the constant function), and n, c0..c2 are constant
    over the K sample rotations, so this is computed as

        out = (c2/n)·(v∘v)Aᵀ + c1·x (padded) + n c0·e_0,

    i.e. only one elementwise pass over the K values. Saves x and the per-function scalars;
    v is recomputed in backward (one small matmul). n is a constant; c0..c2 get gradients only
    when they require them (trainable coefficients).
    """

    @staticmethod
    def forward(ctx, x, n, c0, c1, c2, S, A):
        ctx.save_for_backward(x, n, c0, c1, c2, S, A)
        return _polynomial_on_so3(x, n, c0, c1, c2, S, A)

    @staticmethod
    def backward(ctx, g):
        x, n, c0, c1, c2, S, A = ctx.saved_tensors
        m = min(x.shape[1], g.shape[1])
        grads = [None] * 7
        if ctx.needs_input_grad[0]:
            gx = torch.empty_like(x)
            for sl in _blocks(x.shape[0], x.device):
                gs, xs = g[sl], x[sl]
                gp = torch.matmul(gs * (_rows(c2, sl) / _rows(n, sl)), A)
                gp.mul_(torch.matmul(xs, S.T))
                torch.matmul(gp, 2 * S, out=gx[sl])
                gx[sl, :m].addcmul_(gs[:, :m], _rows(c1, sl))
            grads[0] = gx
        if ctx.needs_input_grad[2]:
            grads[2] = (g[:, :1] * n).sum().reshape(c0.shape)
        if ctx.needs_input_grad[3]:
            grads[3] = (g[:, :m] * x[:, :m]).sum().reshape(c1.shape)
        if ctx.needs_input_grad[4]:
            u = torch.matmul(torch.matmul(x, S.T).square_(), A.T)
            grads[4] = (g * u / n).sum().reshape(c2.shape)
        return tuple(grads)


class LocalActivation(nn.Module):
    """Pointwise polynomial ReLU on SO(3): `(B, C, N_L, ...)` -> `(B, C, N_{keep}, ...)`.

    `keep` (default 2L) truncates the output degree when the consumer needs fewer degrees; the
    kept coefficients are exact.
    """

    def __init__(self, lmax: int, coefficients: str = "adaptive", keep: int | None = None):
        super().__init__()
        if coefficients not in COEFFICIENT_TYPES:
            raise ValueError(f"coefficients must be one of {COEFFICIENT_TYPES}, got {coefficients!r}")
        self.lmax, self.coefficients = lmax, coefficients
        self.lout = 2 * lmax
        self.keep = self.lout if keep is None else min(keep, self.lout)
        rs = _resampler(lmax, self.lout)
        self.register_buffer("sample", rs.sample_in.float(), persistent=False)  # (K, N_L)
        self.register_buffer("analysis", rs.analysis[: n_coeffs(self.keep)].float(), persistent=False)
        self.register_buffer("const_c", torch.tensor(_CONST), persistent=False)
        if coefficients == "trainable":
            self.theta = nn.Parameter(torch.zeros(3))

    def polynomial(self, x: torch.Tensor):
        """Detached normaliser n and coefficients (c0, c1, c2), each (B, C, 1, ...)."""
        with torch.no_grad():
            mu = x[:, :, :1]
            var = mean_square(x, dim=2, from_degree=1, keepdim=True)
            if self.coefficients == "adaptive":
                three_sigma = 3 * var.sqrt()
                # clamp, not + 1e-12: an ONNX optimiser folded the tiny add away (0/0 -> NaN)
                n = three_sigma.clamp_min(1e-12)
                c0, c1, c2 = adaptive_coefficients((mu / n).clamp(-1, 1))
                neg = mu + three_sigma <= 0
                pos = mu - three_sigma >= 0
                zero = torch.zeros_like(c0)
                c0 = torch.where(neg | pos, zero, c0)
                c2 = torch.where(neg | pos, zero, c2)
                c1 = torch.where(neg, torch.full_like(c1, 0.01), torch.where(pos, torch.ones_like(c1), c1))
                return n, (c0, c1, c2)
            n = (torch.sqrt(8 * math.pi**2 * (mu * mu + var)) / 3).clamp_min(1e-12)
        c = self.const_c.to(x.dtype)
        if self.coefficients == "trainable":
            c = c + self.theta.to(x.dtype)
        return n, (c[0], c[1], c[2])

    #: use the fused autograd function (False: plain autograd ops, kept as the reference)
    fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with full_precision(x):
            return self._forward(as_full_precision(x))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = so3_last(x)
        n, (c0, c1, c2) = self.polynomial(x)
        if self.fused:
            rows = lambda t: to_rows(t) if t.dim() else t  # noqa: E731
            args = (to_rows(x), rows(n), rows(c0), rows(c1), rows(c2), self.sample, self.analysis)
            out = _PolynomialOnSO3.apply(*args) if torch.is_grad_enabled() else _polynomial_on_so3(*args)
            return from_rows(out, x)
        return self.reference(x, n, (c0, c1, c2))

    def reference(self, x, n, c):
        """n·P(f/n) with plain autograd ops: evaluate at K rotations, apply P, transform back."""
        c0, c1, c2 = c
        v = torch.einsum("kn,bcn...->bck...", self.sample, x)
        p = n * c0 + c1 * v + (c2 / n) * (v * v)
        return torch.einsum("mk,bck...->bcm...", self.analysis, p)

    def extra_repr(self) -> str:
        return f"L {self.lmax}->{self.keep}, coefficients={self.coefficients}, K={self.sample.shape[0]}"


#: floor of the SoftMax denominator, relative to the RMS of the input function (see SO3SoftMax)
SOFTMAX_FLOOR = 1e-2


class SO3SoftMax(nn.Module):
    """Rotation-invariant soft maximum of each SO(3) function (App. J.1):

    SoftMax(f) = ∫ ReLU(f)² / ∫ ReLU(f) ≈ [Σ_l ‖p^l‖²/(2l+1)] / max(|p⁰|, 0.01·rms(f)) with
    p = σ(f) the local polynomial ReLU (degree 2L). `(B, C, N_L, ...)` -> `(B, C, ...)`.

    The authors divide by |p⁰ + 1e-16|. p⁰ = mean_Q p can cross 0 (constant/trainable
    coefficients) or vanish by cancellation (adaptive, a → −1); there the quotient is dominated
    by float rounding, so rotated copies of the same input got logits differing by ~1e-3 in
    float32. The floor (`SOFTMAX_FLOOR`·rms(f), itself invariant) only acts in that regime.
    """

    def __init__(self, lmax: int, coefficients: str = "adaptive"):
        super().__init__()
        self.activation = LocalActivation(lmax, coefficients)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with full_precision(x):
            return self._forward(as_full_precision(x))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.activation(x)
        num = mean_square(p, dim=2)
        with torch.no_grad():  # the floor is a normaliser: constant in backprop (and no sqrt'(0))
            rms = mean_square(x, dim=2).sqrt()
        return num / torch.maximum(p[:, :, 0].abs(), (SOFTMAX_FLOOR * rms).clamp_min(1e-16))


class GlobalActivation(nn.Module):
    """Gate each SO(3) function by its channels' SoftMax values (App. J.2):

    out_c = f_c · sigmoid(Σ_c' W_cc' SoftMax(f_c') + b_c), per voxel; degree unchanged.
    The inner SoftMax uses the given coefficient type (the authors' code always uses
    ``trainable`` there).
    """

    def __init__(self, channels: int, lmax: int, coefficients: str = "adaptive"):
        super().__init__()
        self.softmax = SO3SoftMax(lmax, coefficients)
        self.mix = nn.Linear(channels, channels)
        self.lmax = self.lout = self.keep = lmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.softmax(x).movedim(1, -1)  # (B, ..., C)
        gate = torch.sigmoid(self.mix(s)).movedim(-1, 1)  # (B, C, ...)
        return x * gate.unsqueeze(2)
