"""Regular 3D G-CNN (`gcnn`): group tables, layer equivariance, network invariance, options."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from volrot.errors import UserError
from volrot.models import count_parameters, create_model, get_entry
from volrot.models.gcnn import (
    GroupConv3d,
    LiftingConv3d,
    cube_subgroup,
    group_channels,
)
from volrot.so3.sampling import octahedral
from volrot.so3.volume import rotate_exact

ORDERS = {"O": 24, "Oh": 48, "D4": 8, "D4h": 16}


def smooth_volume(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """A structured, asymmetric random volume (upsampled noise plus a little fine noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 1, 6, 6, 6, generator=g)
    fine = 0.1 * torch.randn(batch, 1, size, size, size, generator=g)
    return F.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=True) + fine


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Set BN running statistics to those of the batch `x` (eval-mode activations of sane scale)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def invariance_error(model, x, elements) -> float:
    """max over elements g of max|f(g x) - f(x)| / max|f(x)| (eval mode, one batched forward)."""
    with torch.no_grad():
        ys = model(torch.cat([rotate_exact(x, g) for g in elements]))
    ys = ys.view(len(elements), x.shape[0], -1)
    return float((ys - ys[0]).abs().max() / ys[0].abs().max())


def act_on_gfeature(f: torch.Tensor, r, group, channels: int) -> torch.Tensor:
    """[L_r f](x, g) = f(r^-1 x, r^-1 g) for f of shape (B, C*N, D, H, W)."""
    n = group.order
    b = f.shape[0]
    f = f.reshape(b, channels, n, *f.shape[-3:])
    perm = torch.from_numpy(group.cayley[group.inverse[r.index]])  # new g holds old r^-1 g
    return rotate_exact(f[:, :, perm], r).reshape(b, channels * n, *f.shape[-3:])


@pytest.mark.parametrize("name", list(ORDERS))
def test_group_tables(name):
    group = cube_subgroup(name)
    assert group.order == ORDERS[name]
    assert np.array_equal(group.elements[0].matrix, np.eye(3))
    assert group.has_reflections == name.endswith("h")
    n = group.order
    # Cayley table: a Latin square consistent with matrix products; inverses compose to identity.
    for row in group.cayley:
        assert sorted(row) == list(range(n))
    for a in group.elements:
        for b in group.elements:
            prod = group.elements[group.cayley[a.index, b.index]].matrix
            assert np.array_equal(prod, a.matrix @ b.matrix)
    assert all(group.cayley[i, group.inverse[i]] == 0 for i in range(n))
    if name.startswith("D4"):  # keeps the z axis (last spatial axis) up to sign
        assert all(abs(g.matrix[2, 2]) == 1 for g in group.elements)


@pytest.mark.parametrize("name", list(ORDERS))
def test_lifting_and_group_conv_equivariant(name):
    torch.manual_seed(0)
    group = cube_subgroup(name)
    lift = LiftingConv3d(2, 2, group, 3)
    gconv = GroupConv3d(2, 2, group, 3)
    x = torch.randn(1, 2, 5, 5, 5)
    with torch.no_grad():
        y_lift = lift(x)
        y_g = gconv(y_lift)
        # all elements in one batch: lift(r x) == L_r lift(x); gconv(L_r f) == L_r gconv(f)
        lifted_r = torch.cat([act_on_gfeature(y_lift, r, group, 2) for r in group.elements])
        torch.testing.assert_close(lift(torch.cat([rotate_exact(x, r) for r in group.elements])), lifted_r, rtol=0, atol=1e-5)
        expected = torch.cat([act_on_gfeature(y_g, r, group, 2) for r in group.elements])
        torch.testing.assert_close(gconv(lifted_r), expected, rtol=0, atol=1e-5)


def test_filter_bank_is_one_gather():
    group = cube_subgroup("O")
    conv = GroupConv3d(2, 3, group, 3)
    bank = conv.filter_bank()
    assert bank.shape == (3 * 24, 2 * 24, 3, 3, 3)
    # orientation 0 (identity) is the raw filter, unpermuted
    raw = conv.weight.view(3, 2, 24, 3, 3, 3)
    torch.testing.assert_close(bank.view(3, 24, 2, 24, 3, 3, 3)[:, 0], raw)


@pytest.mark.parametrize(
    "name,size",
    [("O", 28), ("Oh", 13), ("D4", 28), ("D4h", 15)],
)
def test_network_logits_invariant_eval(name, size):
    torch.manual_seed(0)
    model = create_model("gcnn", num_classes=3, group=name, width=4)
    x = smooth_volume(2, size)
    calibrate_bn(model, smooth_volume(4, x.shape[-1], seed=1))
    group = cube_subgroup(name)
    assert invariance_error(model, x, group.elements) <= 1e-4


def test_d4_is_not_invariant_to_all_24_rotations():
    torch.manual_seed(0)
    model = create_model("gcnn", num_classes=3, group="D4", width=4)
    x = smooth_volume(2, 12)
    calibrate_bn(model, smooth_volume(4, x.shape[-1], seed=1))
    z_keeping = {g.matrix.tobytes() for g in cube_subgroup("D4").elements}
    others = [g for g in octahedral() if g.matrix.tobytes() not in z_keeping]
    assert len(others) == 16
    assert invariance_error(model, x, [octahedral()[0]] + others) > 1e-3


def test_o_model_is_not_reflection_invariant_but_oh_is():
    torch.manual_seed(0)
    x = smooth_volume(2, 12)
    mirror = [octahedral(True)[0], octahedral(True)[24]]
    o_model = create_model("gcnn", num_classes=3, group="O", width=4)
    calibrate_bn(o_model, smooth_volume(4, 12, seed=1))
    assert invariance_error(o_model, x, mirror) > 1e-3
    oh_model = create_model("gcnn", num_classes=3, group="Oh", width=4)
    calibrate_bn(oh_model, smooth_volume(4, 12, seed=1))
    assert invariance_error(oh_model, x, mirror) <= 1e-4


def test_network_logits_invariant_train_mode_same_batch_rotated():
    torch.manual_seed(0)
    model = create_model("gcnn", num_classes=3, group="O", width=4).train()
    x = smooth_volume(2, 9)
    with torch.no_grad():
        ref = model(x)
        for g in octahedral()[1::4]:  # 6 elements, one per 4 in closure order
            y = model(rotate_exact(x, g))
            assert float((y - ref).abs().max() / ref.abs().max()) <= 1e-4


def test_width_modes():
    assert group_channels(16, 24, "params") == 3  # 16 / sqrt(24) = 3.27
    assert group_channels(16, 8, "compute") == 2
    assert group_channels(16, 24, "compute") == 1  # never below one G-channel
    # compute mode keeps the plain CNN's 3D channel count where N divides the width
    model = create_model("gcnn", num_classes=2, group="D4", width=16, width_mode="compute")
    assert [c.out_channels * 8 for c in model.convs] == [16, 16, 32, 32, 64, 64]
    # params mode stays within 20% of the plain 6-layer CNN it stands in for
    plain = sum(a * b * 27 for a, b in zip([1, 16, 16, 32, 32, 64], [16, 16, 32, 32, 64, 64]))
    for name in ORDERS:
        model = create_model("gcnn", num_classes=2, group=name, width=16)
        convs = sum(p.numel() for c in model.convs for p in c.parameters())
        assert 0.8 * plain < convs < 1.2 * plain, (name, convs, plain)


def test_registry_entry_and_bad_options():
    entry = get_entry("gcnn")
    assert entry.symmetry == "octahedral"
    assert entry.defaults == {"group": "O", "width": 16, "width_mode": "params", "kernel_size": 3}
    assert count_parameters(create_model("gcnn", num_classes=2)) > 0
    with pytest.raises(UserError, match="model.group"):
        create_model("gcnn", num_classes=2, group="T")
    with pytest.raises(UserError, match="model.kernel_size"):
        create_model("gcnn", num_classes=2, kernel_size=4)
    with pytest.raises(UserError, match="model.width_mode"):
        create_model("gcnn", num_classes=2, width_mode="flops")


@pytest.mark.parametrize(
    "name,arch,augment",
    [
        ("gcnn_adrenal", "gcnn", "none"),
        ("gmr_adrenal", "gmr", "none"),
        ("resnet3d_adrenal", "resnet3d", "none"),
        ("resnet3d_adrenal_so3aug", "resnet3d", "so3"),
    ],
)
def test_zoo_recipes_load_and_build(name, arch, augment):
    from volrot.config import REPO_RECIPES, load_recipe_file, recipe_from_dict, validate_model_options

    recipe = recipe_from_dict(load_recipe_file(REPO_RECIPES / f"{name}.yaml"), source=name)
    validate_model_options(recipe)
    assert recipe.model.arch == arch and recipe.train.augment == augment
    assert (recipe.optim.name, recipe.optim.lr, recipe.train.epochs, recipe.train.batch_size) == ("adam", 1e-3, 100, 32)
    assert recipe.optim.milestones == [0.5, 0.75]
    assert count_parameters(create_model(arch, num_classes=2, **recipe.model.options)) > 0


def test_one_epoch_cpu_training_and_checkpoint_round_trip(tiny_recipe):
    from volrot import load_model
    from volrot.engine.train import train

    recipe = tiny_recipe(model={"arch": "gcnn", "width": 2, "group": "O"}, train={"epochs": 1, "name": "gcnn1"})
    result = train(recipe, progress=False)
    assert set(result.metrics) >= {"val", "test"}
    assert 0.0 <= result.metrics["test"]["acc"] <= 1.0
    model = load_model(result.best_checkpoint).model
    assert model.volrot_arch == "gcnn" and model.volrot_config["group"] == "O"
    x = smooth_volume(2, 16)
    assert invariance_error(model, x, octahedral()) <= 1e-4
