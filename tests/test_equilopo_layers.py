"""EquiLoPO layers: activation = n·P(f/n) on SO(3), CG form, and equivariance of every layer.

Rotating a field (B, C, N_L, D, H, W) by a grid rotation R = rotating the volume (rotate_exact)
and every coefficient block f^l ↦ f^l D^l(R)ᵀ. Each layer must commute with that.
"""

import math

import pytest
import torch

from volrot.models.equilopo import (
    GlobalActivation,
    LocalActivation,
    SE3BatchNorm,
    SE3Dropout,
    SO3Conv,
    SO3SoftMax,
    SymmetricAvgPool,
)
from volrot.models.equilopo.activation import adaptive_coefficients
from volrot.so3 import wigner as w
from volrot.so3.check import relative_error
from volrot.so3.fields import SO3Fourier
from volrot.so3.groups import octahedral
from volrot.so3.sampling import haar_matrices
from volrot.so3.volume import rotate_exact

GRID = octahedral()
SOME = [GRID[i] for i in (1, 5, 9, 17, 23)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: the field law of every EquiLoPO layer (volrot.so3.fields)
FIELD = SO3Fourier()


def reference_polynomial(act, f):
    """n, (c0, c1, c2) of the activation for a batch of flat functions f (M, N) in float64."""
    x = f.float().reshape(f.shape[0], 1, -1, 1, 1, 1)
    n, c = act.polynomial(x)
    flat = lambda t: t.double().reshape(-1) if t.dim() else t.double()  # noqa: E731
    return flat(n), [flat(ci) for ci in c]


@pytest.mark.parametrize("coefficients", ["adaptive", "constant", "trainable"])
@pytest.mark.parametrize("lmax", [1, 2])
def test_activation_equals_n_P_f_over_n_at_random_rotations(coefficients, lmax):
    act = LocalActivation(lmax, coefficients)
    if coefficients == "trainable":
        act.theta.data = torch.tensor([0.05, -0.1, 0.2])
    f = torch.randn(40, w.n_coeffs(lmax), dtype=torch.float64)
    f[:10, 0] += 30.0  # mostly positive functions
    f[10:20, 0] -= 30.0  # mostly negative functions
    out = act(f.float().reshape(40, 1, -1, 1, 1, 1)).reshape(40, -1).double()
    assert out.shape[1] == w.n_coeffs(2 * lmax)
    n, (c0, c1, c2) = reference_polynomial(act, f)
    Q = torch.as_tensor(haar_matrices(30, 7))
    y = w.evaluate(f, lmax, Q) / n[:, None]
    expect = n[:, None] * (c0[..., None] + c1[..., None] * y + c2[..., None] * y * y)
    got = w.evaluate(out, 2 * lmax, Q)
    assert relative_error(got, expect) < 1e-5
    if coefficients == "adaptive":  # the three regimes of Eq. 15
        assert torch.allclose(c1[:10], torch.ones(10, dtype=torch.float64))
        assert torch.allclose(c1[10:20], torch.full((10,), 0.01, dtype=torch.float64))


def test_activation_matches_cg_product_formula():
    act = LocalActivation(1, "constant")
    f = torch.randn(16, w.n_coeffs(1), dtype=torch.float64)
    out = act(f.float().reshape(16, 1, -1, 1, 1, 1)).reshape(16, -1).double()
    n, (c0, c1, c2) = reference_polynomial(act, f)
    expect = (c2 / n)[:, None] * w.product_cg(f, 1, f, 1)
    expect[:, : w.n_coeffs(1)] += c1 * f
    expect[:, 0] += n * c0
    assert relative_error(out, expect) < 1e-5


def test_adaptive_coefficients_fit_relu():
    # Eq. 15 is the L2 fit of ReLU on [a−1, a+1]: residual orthogonal to 1, y, y²
    a = torch.tensor([-0.6, 0.0, 0.3], dtype=torch.float64)
    c0, c1, c2 = adaptive_coefficients(a)
    for i in range(3):
        y = torch.linspace(float(a[i]) - 1, float(a[i]) + 1, 200001, dtype=torch.float64)
        r = torch.relu(y) - (c0[i] + c1[i] * y + c2[i] * y * y)
        for k in range(3):
            assert abs(torch.trapezoid(r * y**k, y).item()) < 1e-6


def test_fused_activation_gradients_match_autograd_reference():
    for coefficients in ("adaptive", "trainable"):
        act = LocalActivation(1, coefficients)
        if coefficients == "trainable":
            act.theta.data = torch.tensor([0.1, -0.2, 0.3])
        x = torch.randn(2, 3, 10, 3, 3, 3, requires_grad=True)
        g = torch.randn(2, 3, 35, 3, 3, 3)
        grads = []
        for fused in (True, False):
            act.fused = fused
            x.grad = None
            act.zero_grad()
            (act(x) * g).sum().backward()
            grads.append([x.grad.clone()] + ([act.theta.grad.clone()] if coefficients == "trainable" else []))
        act.fused = True
        for a, b in zip(*grads):
            assert relative_error(a, b) < 1e-5


def test_activation_keep_truncates_exactly():
    full, cut = LocalActivation(2, "adaptive"), LocalActivation(2, "adaptive", keep=3)
    x = torch.randn(2, 2, 35, 3, 3, 3)
    assert torch.allclose(cut(x), full(x)[:, :, : w.n_coeffs(3)], atol=1e-5)


@pytest.mark.parametrize("lin,lout", [(0, 2), (2, 1), (4, 1)])
def test_conv_equivariant(lin, lout):
    conv = SO3Conv(2, 3, lin, lout, filter_lmax=2)
    x = torch.randn(1, 2, w.n_coeffs(lin), 6, 6, 6)
    y = conv(x)
    assert y.shape == (1, 3, w.n_coeffs(lout), 6, 6, 6)
    for g in SOME:
        assert relative_error(conv(FIELD.transform(x, g)), FIELD.transform(y, g)) < 1e-5


@pytest.mark.parametrize("factorize_from", [0, 1, 2])
def test_conv_factorised_form_equals_dense(factorize_from, monkeypatch):
    conv = SO3Conv(2, 3, 3, 2, filter_lmax=2)
    x = torch.randn(2, 2, w.n_coeffs(3), 5, 5, 5)
    dense = conv(x)
    monkeypatch.setattr(SO3Conv, "factorize_from", factorize_from)
    assert relative_error(conv(x), dense) < 1e-5


def test_conv_counts_live_and_paper_weights():
    conv = SO3Conv(4, 4, 2, 1, filter_lmax=2)
    assert conv.paper_weight_count == 16 * 1260  # docs/equilopo-math.md §2.2
    # live (l1, l2, l3, shell) blocks: Σ (2l1+1)(2l3+1)·shells over the selection rule
    assert conv.live_weight_count == 16 * 217
    assert SO3Conv(4, 4, 4, 1).paper_weight_count == 16 * 5940
    assert SO3Conv(1, 4, 0, 2).paper_weight_count == 4 * 36


def test_conv_nonequivariant_weights_would_be_caught():
    # sanity of the test harness: a plain conv on the coefficient channels is not equivariant
    conv = torch.nn.Conv3d(10, 10, 3, padding=1)
    x = torch.randn(1, 1, 10, 6, 6, 6)
    y = conv(x[:, 0]).unsqueeze(1)
    assert relative_error(conv(FIELD.transform(x, GRID[1])[:, 0]).unsqueeze(1), FIELD.transform(y, GRID[1])) > 1e-2


@pytest.mark.parametrize("coefficients", ["adaptive", "constant", "trainable"])
def test_local_activation_equivariant(coefficients):
    act = LocalActivation(1, coefficients)
    x = torch.randn(2, 2, 10, 4, 4, 4)
    y = act(x)
    for g in SOME:
        assert relative_error(act(FIELD.transform(x, g)), FIELD.transform(y, g)) < 1e-5


def test_softmax_invariant_and_global_activation_equivariant():
    sm = SO3SoftMax(2, "adaptive")
    x = torch.randn(2, 3, 35, 4, 4, 4)
    s = sm(x)
    assert s.shape == (2, 3, 4, 4, 4)
    ga = GlobalActivation(3, 2, "trainable")
    y = ga(x)
    for g in SOME:
        assert relative_error(sm(FIELD.transform(x, g)), rotate_exact(s, g)) < 1e-5
        assert relative_error(ga(FIELD.transform(x, g)), FIELD.transform(y, g)) < 1e-5


def test_softmax_is_a_soft_maximum():
    # a function that is positive only near one rotation: SoftMax ≈ ∫ReLU(f)²/∫ReLU(f) > mean
    f = torch.zeros(1, 1, 10, 1, 1, 1)
    f.view(-1)[1:] = torch.randn(9)
    sm = SO3SoftMax(1, "adaptive")
    Q = torch.as_tensor(haar_matrices(20000, 1))
    vals = w.evaluate(f.reshape(1, -1).double(), 1, Q)
    relu = vals.clamp_min(0)
    mc = float((relu**2).mean() / relu.mean())
    assert abs(float(sm(f)) - mc) / mc < 0.15  # polynomial ReLU vs ReLU, Monte Carlo


def test_batchnorm_equivariant_and_normalises():
    bn = SE3BatchNorm(3, 1)
    x = torch.randn(4, 3, 10, 4, 4, 4) * 3 + 1
    y = bn(x)
    assert torch.allclose(y[:, :, 0].mean(dim=(0, 2, 3, 4)), torch.zeros(3), atol=1e-5)
    second = w.mean_square(y, dim=2).mean(dim=(0, 2, 3, 4))
    assert torch.allclose(second, torch.ones(3), atol=1e-3)
    for g in SOME:
        assert relative_error(bn(FIELD.transform(x, g)), FIELD.transform(y, g)) < 1e-5
    bn.eval()
    y = bn(x)
    assert relative_error(bn(FIELD.transform(x, GRID[7])), FIELD.transform(y, GRID[7])) < 1e-5


def test_dropout_drops_whole_functions():
    drop = SE3Dropout(0.5)
    x = torch.ones(8, 2, 10, 3, 3, 3)
    y = drop(x)
    kept = y[:, :, :1] != 0
    assert torch.equal((y != 0), kept.expand_as(y))  # all coefficients share the mask
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 2.0))
    assert 0.2 < kept.float().mean() < 0.8
    drop.eval()
    assert torch.equal(drop(x), x)


@pytest.mark.parametrize("size,out", [(8, 4), (7, 4), (28, 14), (14, 7), (3, 2), (1, 1)])
def test_symmetric_pool_sizes_and_equivariance(size, out):
    pool = SymmetricAvgPool()
    x = torch.randn(1, 2, 10, size, size, size)
    y = pool(x)
    assert y.shape[-3:] == (out, out, out)
    for g in SOME:
        assert relative_error(pool(FIELD.transform(x, g)), FIELD.transform(y, g)) < 1e-5


def test_moments_identity():
    # mean_Q f² computed from coefficients equals a Monte Carlo estimate
    f = torch.randn(1, 10, dtype=torch.float64)
    Q = torch.as_tensor(haar_matrices(40000, 2))
    mc = float((w.evaluate(f, 1, Q) ** 2).mean())
    assert abs(float(w.mean_square(f)) - mc) / mc < 0.05
    assert math.isclose(float(w.mean_square(f)), float(w.product_cg(f, 1, f, 1)[0, 0]), rel_tol=1e-12)
