import numpy as np
import pytest
import torch

from volrot.so3.groups import octahedral
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
