"""The cube group and its subgroups (`volrot.so3.groups`): closure, tables, lookup, voxel words."""

import numpy as np
import pytest
import torch

from volrot.so3.groups import cube_group, octahedral
from volrot.so3.volume import rotate_exact


def test_24_rotations_closed_and_distinct():
    group = octahedral()
    assert len(group) == 24
    mats = {g.matrix.tobytes() for g in group}
    assert len(mats) == 24
    assert np.array_equal(group[0].matrix, np.eye(3))
    for g in group:
        assert g.is_rotation
        for h in group:
            assert (g.matrix @ h.matrix).tobytes() in mats


def test_48_with_reflections():
    group = octahedral(reflections=True)
    assert len(group) == 48
    assert sum(g.is_rotation for g in group) == 24
    assert all(g.is_rotation for g in group[:24])


@pytest.mark.parametrize("reflections", [False, True])
def test_voxel_op_equals_matrix_on_voxel_centres(reflections):
    n = 5
    rng = np.random.default_rng(0)
    vol = torch.from_numpy(rng.normal(size=(n, n, n)))
    c = (n - 1) / 2
    idx = np.stack(np.meshgrid(*(np.arange(n),) * 3, indexing="ij"), -1).reshape(-1, 3)
    for g in octahedral(reflections):
        out = rotate_exact(vol, g).numpy()
        # out(R p) = in(p), p in centred coordinates (x, y, z) = tensor axes (D, H, W)
        q = np.rint((idx - c) @ g.matrix.T + c).astype(int)
        np.testing.assert_array_equal(out[q[:, 0], q[:, 1], q[:, 2]], vol.numpy()[idx[:, 0], idx[:, 1], idx[:, 2]])


def test_rotate_exact_acts_on_last_three_axes_only():
    x = torch.randn(2, 3, 4, 4, 4)
    g = octahedral()[5]
    y = rotate_exact(x, g)
    assert y.shape == x.shape
    torch.testing.assert_close(y[1, 2], rotate_exact(x[1, 2], g))


@pytest.mark.parametrize("reflections", [False, True])
def test_rotate_exact_numpy_and_torch_agree(reflections):
    """One op word, two array libraries (predict's numpy TTA uses the numpy path)."""
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 7)).astype(np.float32)
    for g in octahedral(reflections):
        out = rotate_exact(x, g)
        assert isinstance(out, np.ndarray) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, rotate_exact(torch.from_numpy(x), g).numpy())


ORDERS = {"C1": 1, "O": 24, "Oh": 48, "D4": 8, "D4h": 16}


@pytest.mark.parametrize("name", list(ORDERS))
def test_group_tables(name):
    group = cube_group(name)
    assert group.order == ORDERS[name] and group.name == name
    assert np.array_equal(group.elements[0].matrix, np.eye(3))
    assert [g.index for g in group] == list(range(group.order))
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


def test_lookup_by_matrix_inverse_and_complement():
    O, Oh, D4 = cube_group("O"), cube_group("Oh"), cube_group("D4")
    z90 = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    g = O.element(z90)
    assert np.array_equal(g.matrix, z90) and g.angle_deg == pytest.approx(90.0)
    assert np.array_equal(O.inverse_of(g).matrix, z90.T)
    assert O.index(z90.astype(np.float64) + 1e-9) == g.index  # float matrices are rounded
    assert z90 in D4 and -np.eye(3) in Oh and -np.eye(3) not in O
    with pytest.raises(KeyError, match="not in the group O"):
        O.index(-np.eye(3))
    # Oh = O ∪ (O × −I); the elements of Oh outside D4: 16 rotations and 24 improper ones
    assert len(O.outside(Oh)) == 24 and all(not h.is_rotation for h in O.outside(Oh))
    assert sum(h.is_rotation for h in D4.outside(Oh)) == 16 and len(D4.outside(Oh)) == 40
    assert cube_group("Oh") is Oh  # built once
    with pytest.raises(ValueError, match="unknown cube group"):
        cube_group("T")


def test_subgroups_share_the_elements_of_the_cube_group():
    """Each subgroup's elements are elements of Oh with the same voxel words (one construction)."""
    Oh = cube_group("Oh")
    for name in ORDERS:
        for g in cube_group(name):
            assert g.ops == Oh.element(g.matrix).ops
    assert [g.matrix.tolist() for g in octahedral(True)] == [g.matrix.tolist() for g in Oh]
