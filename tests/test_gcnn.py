"""Regular 3D G-CNN (`gcnn`): layer equivariance on every subgroup, filter bank, widths, options.

Logit invariance, field laws, gradients, negative controls and checkpoints: tests/test_models.py;
the group tables: tests/test_so3_groups.py.
"""

import pytest
import torch

from volrot.errors import UserError
from volrot.models import count_parameters, create_model, get_entry
from volrot.models.gcnn import (
    GroupConv3d,
    LiftingConv3d,
    cube_subgroup,
    group_channels,
)
from volrot.so3.check import assert_equivariant
from volrot.so3.fields import Regular, Scalar

ORDERS = {"O": 24, "Oh": 48, "D4": 8, "D4h": 16}


@pytest.mark.parametrize("name", list(ORDERS))
def test_lifting_and_group_conv_equivariant(name):
    """lift(r·x) = L_r lift(x) and gconv(L_r f) = L_r gconv(f) for every element r."""
    torch.manual_seed(0)
    group = cube_subgroup(name)
    lift = LiftingConv3d(2, 2, group, 3)
    gconv = GroupConv3d(2, 2, group, 3)
    x = torch.randn(1, 2, 5, 5, 5)
    with torch.no_grad():
        f = lift(x)
    regular = Regular(group)
    assert_equivariant(lift, x, group.elements, Scalar(), regular, tol=1e-6)
    assert_equivariant(gconv, f, group.elements, regular, regular, tol=1e-6)


def test_filter_bank_is_one_gather():
    group = cube_subgroup("O")
    conv = GroupConv3d(2, 3, group, 3)
    bank = conv.filter_bank()
    assert bank.shape == (3 * 24, 2 * 24, 3, 3, 3)
    # orientation 0 (identity) is the raw filter, unpermuted
    raw = conv.weight.view(3, 2, 24, 3, 3, 3)
    torch.testing.assert_close(bank.view(3, 24, 2, 24, 3, 3, 3)[:, 0], raw)


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
    # the declared symmetry is the chosen group (D4: 8 rotations, not the 24)
    assert {g: entry.symmetry_of({"group": g}).group.order for g in ORDERS} == ORDERS
    assert entry.symmetry_of().name == "O" and not entry.symmetry_of().continuous
    assert entry.defaults == {"group": "O", "width": 16, "width_mode": "params", "kernel_size": 3}
    assert count_parameters(create_model("gcnn", num_classes=2)) > 0
    with pytest.raises(UserError, match="model.group"):
        create_model("gcnn", num_classes=2, group="T")
    with pytest.raises(UserError, match="model.kernel_size"):
        create_model("gcnn", num_classes=2, kernel_size=4)
    with pytest.raises(UserError, match="model.width_mode"):
        create_model("gcnn", num_classes=2, width_mode="flops")
