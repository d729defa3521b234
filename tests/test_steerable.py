"""Tests of the 3D steerable CNN: e3nn frame, kernel basis, pooling, continuous rotations, options.

Grid rotations act on volumes with `rotate_exact` (out(R p) = in(p), tensor axes (D,H,W) =
(x,y,z)); a field of irreps ρ transforms as  f ↦ D_ρ(R) · rotate_exact(f),  with
D_ρ(R) = `irreps.D_from_matrix(R)` for the same matrix R (`volrot.so3.fields.Irreps`).
Logit invariance (24 rotations; 48 elements with reflections=True), chirality of the default,
the field law of every layer in train and eval mode and checkpoints: tests/test_models.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from e3nn import o3

from volrot.errors import UserError
from volrot.models import count_parameters, create_model
from volrot.models.steerable import Downsample, SteerableConv3d
from volrot.so3.check import assert_equivariant
from volrot.so3.fields import Irreps, Scalar
from volrot.so3.groups import octahedral
from volrot.so3.sampling import haar_matrices
from volrot.so3.volume import centred_coordinates, rotate_exact, rotate_trilinear

ROTATIONS = octahedral()
GROUP_48 = octahedral(reflections=True)


def _matrix(g) -> torch.Tensor:
    return torch.tensor(g.matrix, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _tiny(**opts):
    cfg = dict(width=2, lmax=2, blocks=1, kernel_size=5)
    cfg.update(opts)
    torch.manual_seed(0)
    return create_model("steerable", num_classes=3, in_channels=1, **cfg)


# --- conventions --------------------------------------------------------------------------------


@pytest.mark.parametrize("l", [1, 2, 3, 4])
def test_e3nn_frame_matches_volrot_axes(l):
    """Spherical harmonics sampled on (D,H,W)=(x,y,z) offsets obey Y(R u) = D^l(R) Y(u) on the grid.

    This is the change of frame, written down: there is none. e3nn's y-up convention lives inside
    its choice of real basis, shared by `spherical_harmonics`, `wigner_3j` and `D_from_matrix`.
    """
    lattice = centred_coordinates((5, 5, 5), dtype=torch.float64)
    Y = o3.spherical_harmonics(l, lattice, normalize=True, normalization="component")  # (5,5,5,2l+1)
    Y = Y * (lattice.norm(dim=-1) > 0)[..., None]
    field = Y.permute(3, 0, 1, 2)[None]  # one degree-l field on the lattice
    irreps = o3.Irreps([(1, (l, (-1) ** l))])
    for g in GROUP_48:
        torch.testing.assert_close(Irreps(irreps=irreps).transform(field, g), field, atol=1e-5, rtol=0)
    if l == 1:
        for g in ROTATIONS:
            torch.testing.assert_close(irreps.D_from_matrix(_matrix(g)), _matrix(g), atol=1e-6, rtol=0)


@pytest.mark.parametrize("reflections", [False, True])
def test_kernel_satisfies_steerability_constraint(reflections):
    """κ(R u) = D_out(R) κ(u) D_in(R)ᵀ on the 24 rotations (48 elements with reflections=True)."""
    torch.manual_seed(0)
    irreps_in, irreps_out = o3.Irreps("2x0e+2x1o+1x2e"), o3.Irreps("1x0e+2x1o+2x2e")
    conv = SteerableConv3d(irreps_in, irreps_out, kernel_size=5, reflections=reflections).double()
    kernel = conv.kernel().detach()  # (out, in, k, k, k)
    assert kernel.abs().max() > 0
    for g in GROUP_48 if reflections else ROTATIONS:
        Dout, Din = irreps_out.D_from_matrix(_matrix(g)), irreps_in.D_from_matrix(_matrix(g))
        # rotate_exact(κ)(q) = κ(Rᵀ q) = D_outᵀ κ(q) D_in
        back = torch.einsum("ij,jk...,lk->il...", Dout, rotate_exact(kernel, g), Din)
        assert _rel(back, kernel) < 1e-6, g.index


def test_band_limit_keeps_high_degrees_off_small_shells():
    """k=3 has shells r=0 (J=0 only) and r=1 (J≤3): a 2e→2e kernel gets J ∈ {0,1,2,3}, never 4."""
    conv = SteerableConv3d("1x2e", "1x2e", kernel_size=3)
    # shell 0: J=0; shell 1: J=0,1,2,3  -> 5 basis kernels
    assert conv.weights[0].shape == (1, 1, 5)
    conv5 = SteerableConv3d("1x2e", "1x2e", kernel_size=5)
    # shells 0,1,2: 1 + 4 + 5 (J=4 allowed from r=2 on)
    assert conv5.weights[0].shape == (1, 1, 10)


@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("mode", ["blur", "avg"])
def test_downsample_is_centred(size, mode):
    """Subsampling by 2 keeps a grid symmetric about the centre for even and odd sizes."""
    x = torch.randn(1, 2, size, size, size)
    pool = Downsample("2x0e", mode)
    out = pool(x)
    assert out.shape[-1] == (size + 1) // 2
    assert_equivariant(pool, x, ROTATIONS, Scalar(), Scalar(), tol=1e-6)


# --- feature maps and logits ------------------------------------------------------------------


def test_every_layer_is_declared_with_its_irreps():
    """The harness checks the declared layers: they are all of them, every kind of layer, with
    degree-2 fields really present."""
    model = _tiny()
    declared = model.equivariant_layers()
    assert [m for _, m, _ in declared] == list(model.layers)
    assert all(law.irreps == m.irreps_out for _, m, law in declared)
    kinds = {getattr(m, "module", m).__class__.__name__ for _, m, _ in declared}
    assert kinds == {"SteerableConv3d", "BatchNorm", "Gate", "Downsample"}
    assert any(ir.l == 2 for _, ir in model.layers[2].irreps_out)


# --- continuous rotations -----------------------------------------------------------------------


def _smooth_ball(n: int, seed: int) -> torch.Tensor:
    """A smooth random pattern inside a ball (zero near the faces, so rotations lose nothing)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, n, n, n, generator=g)
    k = torch.exp(-0.5 * (torch.arange(-3.0, 4.0) / 1.2) ** 2)
    k = (k[:, None, None] * k[None, :, None] * k[None, None, :]) / k.sum() ** 3
    x = F.conv3d(x, k[None, None], padding=3)
    r = centred_coordinates((n, n, n)).norm(dim=-1)
    return x * (r < n / 2 - 3).float()


def test_continuous_rotation_error_is_small_and_reported():
    """Off-grid rotations (trilinear) are only approximately symmetric: report the error.

    Error = ‖f(R x) − f(x)‖ / ‖f(x) − mean_batch f(x)‖ (logit change relative to how much the logits
    vary between inputs, so a constant bias cannot hide it). An untrained plain 3D ResNet on the
    same inputs gives the scale of a non-equivariant model.
    """
    x = _smooth_ball(20, seed=0)
    # the resampling helper reproduces the exact grid rotations (same convention as rotate_exact)
    for g in ROTATIONS[::5]:
        torch.testing.assert_close(rotate_trilinear(x, g.matrix)[0], rotate_exact(x, g), atol=1e-5, rtol=0)
    rotations = haar_matrices(3, 0)
    steer = _tiny(width=2)
    torch.manual_seed(0)
    plain = create_model("resnet3d", num_classes=3, width=4)
    errors = {}
    with torch.no_grad():
        for name, model in (("steerable", steer), ("resnet3d", plain)):
            model.train()(x)  # running BN statistics from this batch
            model.eval()
            ref = model(x)
            spread = (ref - ref.mean(0)).norm()
            errors[name] = [float((model(rotate_trilinear(x, R)[0]) - ref).norm() / spread) for R in rotations]
    print("steerable continuous-rotation logit errors:", ", ".join(f"{e:.3f}" for e in errors["steerable"]))
    print("resnet3d (untrained, width 4), same inputs:", ", ".join(f"{e:.3f}" for e in errors["resnet3d"]))
    assert max(errors["steerable"]) < 0.3
    assert np.mean(errors["steerable"]) < np.mean(errors["resnet3d"])


# --- registry, options --------------------------------------------------------------------------


def test_registry_entry_and_options():
    from volrot.models import get_entry

    entry = get_entry("steerable")
    chiral, achiral = entry.symmetry_of(), entry.symmetry_of({"reflections": True})
    assert (chiral.name, chiral.group.order, chiral.continuous) == ("SO(3)", 24, True)
    assert (achiral.name, achiral.group.order, achiral.continuous) == ("O(3)", 48, True)
    model = create_model("steerable", num_classes=2)
    assert model.volrot_arch == "steerable"
    assert model.volrot_config["kernel_size"] == 5
    assert count_parameters(model) > 0
    assert model(torch.randn(1, 1, 12, 12, 12)).shape == (1, 2)
    lmax0 = create_model("steerable", num_classes=2, width=1, lmax=0, kernel_size=3, pooling="avg")
    assert lmax0(torch.randn(1, 1, 8, 8, 8)).shape == (1, 2)
    for bad in (dict(kernel_size=4), dict(pooling="max"), dict(lmax=-1), dict(width=0), dict(blocks=0)):
        with pytest.raises(UserError):
            create_model("steerable", num_classes=2, **bad)


def test_state_dict_holds_weights_not_basis():
    model = _tiny()
    keys = model.state_dict().keys()
    assert not any("basis" in k or "taps" in k or "_anchor" in k for k in keys)
    clone = _tiny()
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    torch.testing.assert_close(clone.eval()(x), model.eval()(x))
    with torch.no_grad():
        assert math.isfinite(float(model(x).sum()))
