"""Tests of the 3D steerable CNN: e3nn frame, kernel basis, feature maps, logits, options.

Grid rotations act on volumes with `rotate_exact` (out(R p) = in(p), tensor axes (D,H,W) =
(x,y,z)); a field of irreps ρ must transform as  f ↦ D_ρ(R) · rotate_exact(f),  with
D_ρ(R) = `irreps.D_from_matrix(R)` for the same matrix R.
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
from volrot.models.steerable import Downsample, SteerableConv3d, _kernel_lattice
from volrot.so3.sampling import octahedral
from volrot.so3.volume import rotate_exact, rotate_trilinear

ROTATIONS = octahedral()
GROUP_48 = octahedral(reflections=True)


def _matrix(g) -> torch.Tensor:
    return torch.tensor(g.matrix, dtype=torch.float64)


def _transform_field(irreps: o3.Irreps, g, f: torch.Tensor) -> torch.Tensor:
    """[g·f](q) = D_ρ(R) f(Rᵀ q) for a feature map f of shape (B, irreps.dim, D, H, W)."""
    D = irreps.D_from_matrix(_matrix(g)).to(f.dtype)
    return torch.einsum("ij,bj...->bi...", D, rotate_exact(f, g))


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
    lattice = _kernel_lattice(5)
    Y = o3.spherical_harmonics(l, lattice, normalize=True, normalization="component")  # (5,5,5,2l+1)
    Y = Y * (lattice.norm(dim=-1) > 0)[..., None]
    field = Y.permute(3, 0, 1, 2)[None]  # one degree-l field on the lattice
    irreps = o3.Irreps([(1, (l, (-1) ** l))])
    for g in GROUP_48:
        torch.testing.assert_close(_transform_field(irreps, g, field), field, atol=1e-5, rtol=0)
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
    for g in ROTATIONS:
        torch.testing.assert_close(pool(rotate_exact(x, g)), rotate_exact(out, g), atol=1e-6, rtol=0)


# --- feature maps and logits ------------------------------------------------------------------


@pytest.mark.parametrize("pooling,reflections", [("blur", False), ("avg", False), ("blur", True)])
def test_feature_maps_transform_by_wigner_matrices(pooling, reflections):
    """Every layer's output (conv, BN, gate, pooling, head conv) transforms by D_ρ(g), in train mode.

    The rotated batch goes through the whole stack, so the errors accumulate as in the model.
    Sizes 10 → 5 → 3 → 2 exercise both even and odd downsampling.
    """
    model = _tiny(pooling=pooling, reflections=reflections).train()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 10, 10, 10)
    group = GROUP_48[::5] if reflections else ROTATIONS[::3]
    with torch.no_grad():
        acts, a = [], x
        for layer in model.layers:
            a = layer(a)
            acts.append(a)
        kinds = set()
        for g in group:
            a = rotate_exact(x, g)
            for layer, ref in zip(model.layers, acts):
                a = layer(a)
                expected = _transform_field(layer.irreps_out, g, ref)
                err = _rel(a, expected)
                assert err < 1e-5, f"{layer.__class__.__name__} {layer.irreps_out}: rel err {err:.2e} at g={g.index}"
                kinds.add(getattr(layer, "module", layer).__class__.__name__)
    assert kinds == {"SteerableConv3d", "BatchNorm", "Gate", "Downsample"}
    assert any(ir.l == 2 for _, ir in model.layers[2].irreps_out)  # degree-2 fields really present


def _invariance_errors(model, x, group) -> list[float]:
    """Relative logit change per group element. In train mode each rotated batch goes alone (its
    own batch statistics); in eval mode all rotated copies share one forward pass."""
    with torch.no_grad():
        ref = model(x)
        if model.training:
            return [_rel(model(rotate_exact(x, g)), ref) for g in group]
        out = model(torch.cat([rotate_exact(x, g) for g in group])).split(len(x))
        return [_rel(o, ref) for o in out]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_logits_invariant_under_24_grid_rotations(mode):
    model = _tiny(width=2)
    torch.manual_seed(2)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():  # give eval-mode BN non-trivial running statistics
        model.train()(x)
    model.train(mode == "train")
    errors = _invariance_errors(model, x, ROTATIONS)
    print(f"steerable {mode}: max relative logit error over 24 rotations = {max(errors):.2e}")
    assert max(errors) <= 1e-4


def test_reflections_option_gives_48_element_invariance_and_default_is_chiral():
    """reflections=True: invariant under all 48 grid elements. Default (SO(3) only): invariant under
    the 24 rotations, but mirror images change the logits far beyond float error (chirality kept)."""
    torch.manual_seed(3)
    x = torch.randn(2, 1, 10, 10, 10)
    achiral = _tiny(reflections=True).eval()
    assert max(_invariance_errors(achiral, x, GROUP_48)) <= 1e-4
    chiral = _tiny(reflections=False).eval()
    rot_errors = _invariance_errors(chiral, x, ROTATIONS[::4])
    flip_errors = _invariance_errors(chiral, x, GROUP_48[24::6])
    print(
        f"steerable reflections=False: rotations {max(rot_errors):.1e}, "
        f"reflections {min(flip_errors):.1e} (relative logit change)"
    )
    assert max(rot_errors) <= 1e-4
    assert min(flip_errors) > 100 * max(rot_errors)


# --- continuous rotations -----------------------------------------------------------------------


def _smooth_ball(n: int, seed: int) -> torch.Tensor:
    """A smooth random pattern inside a ball (zero near the faces, so rotations lose nothing)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, n, n, n, generator=g)
    k = torch.exp(-0.5 * (torch.arange(-3.0, 4.0) / 1.2) ** 2)
    k = (k[:, None, None] * k[None, :, None] * k[None, None, :]) / k.sum() ** 3
    x = F.conv3d(x, k[None, None], padding=3)
    ax = torch.arange(n) - (n - 1) / 2
    r = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij")).norm(dim=0)
    return x * (r < n / 2 - 3).float()


def test_continuous_rotation_error_is_small_and_reported():
    """Off-grid rotations (trilinear) are only approximately symmetric: report the error.

    Error = ‖f(R x) − f(x)‖ / ‖f(x) − mean_batch f(x)‖ (logit change relative to how much the logits
    vary between inputs, so a constant bias cannot hide it). An untrained plain 3D ResNet on the
    same inputs gives the scale of a non-equivariant model.
    """
    from scipy.spatial.transform import Rotation

    x = _smooth_ball(20, seed=0)
    # the resampling helper reproduces the exact grid rotations (same convention as rotate_exact)
    for g in ROTATIONS[::5]:
        torch.testing.assert_close(rotate_trilinear(x, g.matrix)[0], rotate_exact(x, g), atol=1e-5, rtol=0)
    rotations = Rotation.random(3, random_state=0).as_matrix()
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


def test_shipped_adrenal_recipe_builds():
    from volrot.config import find_recipe, load_recipe_file, recipe_from_dict, validate_model_options

    path = find_recipe("steerable", "adrenal")
    assert path is not None
    recipe = recipe_from_dict(load_recipe_file(path), source=str(path))
    validate_model_options(recipe)
    assert recipe.model.arch == "steerable" and recipe.data.name == "adrenal"
    model = create_model("steerable", num_classes=2, **recipe.model.options)
    assert model.fc.in_features == 8 * recipe.model.options["width"]


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


# --- training ---------------------------------------------------------------------------------


def test_one_epoch_cpu_training_and_checkpoint_keep_invariance(tiny_recipe):
    """One epoch on a small subset of the built-in shapes data through the real trainer; the saved
    checkpoint rebuilds (basis recomputed, weights loaded) into a model that is still invariant."""
    import json

    from volrot import load_model
    from volrot.engine.train import train

    recipe = tiny_recipe(
        model={"arch": "steerable", "width": 1, "lmax": 1, "kernel_size": 3},
        data={"max_samples": 16},
        train={"epochs": 1, "batch_size": 8, "name": "steerable-smoke"},
    )
    result = train(recipe, progress=False)
    assert result.completed
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1
    assert math.isfinite(records[0]["train_loss"]) and math.isfinite(records[0]["val_loss"])
    model = load_model(result.best_checkpoint).model
    assert model.volrot_arch == "steerable" and model.volrot_config["lmax"] == 1
    x = torch.randn(2, 1, 16, 16, 16)
    assert max(_invariance_errors(model, x, ROTATIONS[1::6])) <= 1e-4
