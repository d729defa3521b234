"""Real Wigner-D / CG / SH helpers (volrot.so3.wigner): conventions, product rule, report basis."""

import math

import pytest
import torch

from volrot.so3 import wigner as w
from volrot.so3.groups import octahedral
from volrot.so3.sampling import haar_matrices

R = torch.as_tensor(haar_matrices(3, 11))


@pytest.mark.parametrize("l", range(5))
def test_sh_orthonormal_and_rotated_by_D(l):
    x = torch.randn(50, 3, dtype=torch.float64)
    D = w.wigner_D(l, R)
    for k in range(3):
        assert torch.allclose(w.real_sh(l, x @ R[k].T), w.real_sh(l, x) @ D[k].T, atol=1e-12)
    assert torch.allclose(D[0] @ D[0].T, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(w.wigner_D(l, R[0] @ R[1]), D[0] @ D[1], atol=1e-12)
    # orthonormal normalisation, via the addition theorem Σ_m Y_lm(x)² = (2l+1)/(4π)
    assert torch.allclose((w.real_sh(l, x) ** 2).sum(-1), torch.full((50,), (2 * l + 1) / (4 * math.pi), dtype=torch.float64))


def test_sh_at_origin():
    o = torch.zeros(1, 3, dtype=torch.float64)
    assert torch.allclose(w.real_sh(0, o), torch.full((1, 1), 1 / math.sqrt(4 * math.pi), dtype=torch.float64))
    assert torch.equal(w.real_sh(2, o), torch.zeros(1, 5, dtype=torch.float64))


def test_D_of_grid_rotation_is_exact_on_sh():
    for g in octahedral():
        D = w.wigner_D(2, g.matrix)
        x = torch.randn(7, 3, dtype=torch.float64)
        assert torch.allclose(w.real_sh(2, x @ torch.as_tensor(g.matrix, dtype=torch.float64).T), w.real_sh(2, x) @ D.T, atol=1e-12)


@pytest.mark.parametrize("ls", [(1, 1, 2), (2, 1, 1), (2, 2, 4), (1, 2, 3), (2, 2, 0)])
def test_cg_invariant_and_normalised(ls):
    l1, l2, l3 = ls
    C = w.clebsch_gordan(l1, l2, l3)
    D1, D2, D3 = (w.wigner_D(l, R[0]) for l in ls)
    assert torch.allclose(torch.einsum("abc,ai,bj,ck->ijk", C, D1, D2, D3), C, atol=1e-12)
    assert torch.allclose(torch.einsum("abc,abd->cd", C, C), torch.eye(2 * l3 + 1, dtype=torch.float64), atol=1e-12)
    assert torch.count_nonzero(w.clebsch_gordan(1, 1, 3)) == 0


def test_degree_layout():
    assert [w.n_coeffs(L) for L in range(5)] == [1, 10, 35, 84, 165]
    assert [w.degree_offset(l) for l in range(4)] == [0, 1, 10, 35]
    assert w.degree_of_coefficient(2).tolist() == [0] + [1] * 9 + [2] * 25


def test_product_rule_matches_pointwise_product():
    torch.manual_seed(0)
    f = torch.randn(3, w.n_coeffs(2), dtype=torch.float64)
    g = torch.randn(3, w.n_coeffs(1), dtype=torch.float64)
    Q = torch.as_tensor(haar_matrices(25, 3))
    fg = w.product_cg(f, 2, g, 1)
    assert fg.shape == (3, w.n_coeffs(3))
    expect = w.evaluate(f, 2, Q) * w.evaluate(g, 1, Q)
    assert torch.allclose(w.evaluate(fg, 3, Q), expect, atol=1e-11)
    # moments: (f·f)^0 = mean_Q f² = Σ_l ‖f^l‖²/(2l+1)
    assert torch.allclose(w.product_cg(f, 2, f, 2)[:, 0], w.mean_square(f), atol=1e-12)


def test_rotate_coefficients_is_left_translation():
    torch.manual_seed(1)
    f = torch.randn(2, w.n_coeffs(2), dtype=torch.float64)
    Q = torch.as_tensor(haar_matrices(10, 4))
    rf = w.rotate_coefficients(f, 2, R[0])
    # (R·f)(Q) = f(R⁻¹Q)
    assert torch.allclose(w.evaluate(rf, 2, Q), w.evaluate(f, 2, R[0].T @ Q), atol=1e-12)


def test_resampler_is_exact_and_well_conditioned():
    rs = w.SO3Resampler(1, 2)
    assert rs.k == w.n_coeffs(2) and rs.condition < 20
    torch.manual_seed(2)
    f = torch.randn(4, w.n_coeffs(2), dtype=torch.float64)
    values = f @ w.wigner_blocks(2, rs.rotations).T
    assert torch.allclose(values @ rs.analysis.T, f, atol=1e-11)


@pytest.mark.parametrize("l", range(4))
def test_paper_convention_conversion(l):
    M = w.paper_basis(l)
    x = torch.randn(30, 3, dtype=torch.float64)
    assert torch.allclose(w.paper_sh(l, x), w.real_sh(l, x) @ M.T, atol=1e-12)
    assert torch.allclose(M @ M.T, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-12)
    # the report's D (M D Mᵀ) rotates the report's harmonics
    Dr = M @ w.wigner_D(l, R[1]) @ M.T
    assert torch.allclose(w.paper_sh(l, x @ R[1].T), w.paper_sh(l, x) @ Dr.T, atol=1e-12)


def test_paper_sh_phase_and_coefficient_conversion():
    e = torch.eye(3, dtype=torch.float64)  # x, y, z axes
    y1 = w.paper_sh(1, e) / math.sqrt(3 / (4 * math.pi))
    # Y_{1,-1} ∝ −y, Y_{1,0} ∝ z, Y_{1,1} ∝ −x (Condon–Shortley phase)
    assert torch.allclose(y1, torch.tensor([[0.0, 0, -1], [-1, 0, 0], [0, 1, 0]], dtype=torch.float64), atol=1e-12)
    torch.manual_seed(3)
    f = torch.randn(2, w.n_coeffs(2), dtype=torch.float64)
    fr = w.to_paper_coefficients(f, 2)
    Q = torch.as_tensor(haar_matrices(6, 8))
    # same function, evaluated with the report's D^l = M D Mᵀ
    blocks = []
    for l in range(3):
        M = w.paper_basis(l)
        Dr = M @ w.wigner_D(l, Q) @ M.T
        blocks.append(Dr.transpose(-1, -2).reshape(6, -1))
    assert torch.allclose(fr @ torch.cat(blocks, -1).T, w.evaluate(f, 2, Q), atol=1e-12)
    assert torch.allclose(w.to_paper_coefficients(fr, 2, inverse=True), f, atol=1e-12)
