import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from volrot.so3.groups import octahedral
from volrot.so3.sampling import axis_sweep, haar
from volrot.so3.volume import (
    apply_sphere_mask,
    centred_coordinates,
    circumscribed_padding,
    pad_to_circumscribed,
    prepare_volume,
    rotate_exact,
    rotate_exact_batch,
    rotate_trilinear,
    sphere_mask,
)


def _smooth_volume(n, seed=0, channels=1):
    """Band-limited random volume (so trilinear interpolation is accurate)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(channels, 1, n, n, n, generator=g, dtype=torch.float64)
    k = torch.exp(-torch.arange(-6, 7, dtype=torch.float64) ** 2 / (2 * 2.0**2))
    k = (k[:, None, None] * k[None, :, None] * k[None, None, :])[None, None]
    x = torch.nn.functional.conv3d(x, k / k.sum(), padding=6)
    return (x / x.std())[:, 0]


def test_trilinear_equals_exact_on_all_24_grid_rotations():
    x = torch.randn(2, 3, 9, 9, 9)
    group = octahedral()
    mats = np.stack([g.matrix for g in group])
    torch.testing.assert_close(rotate_trilinear(x, mats), rotate_exact_batch(x, group), atol=1e-5, rtol=0)


def test_trilinear_matches_exact_on_90_degree_axis_sweep():
    # the axis sweep's 90/180/270 degree rotations are cube rotations: both paths must agree
    x = torch.randn(1, 2, 8, 8, 8)  # even size: centre between voxels
    sweep = axis_sweep(90)
    by_matrix = {g.matrix.tobytes(): g for g in octahedral()}
    for m in sweep.matrices:
        g = by_matrix[np.rint(m).astype(np.int64).tobytes()]
        torch.testing.assert_close(rotate_trilinear(x, m)[0], rotate_exact(x, g), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [10, 11])
def test_trilinear_agrees_with_scipy_affine_transform(n):
    # independent check of the convention for arbitrary angles: scipy maps output index o to
    # input index Rᵀ(o − c) + c, which is out(q) = in(Rᵀ q) about the centre c
    x = torch.randn(n, n, n, dtype=torch.float64)
    c = np.full(3, (n - 1) / 2)
    for m in haar(3, seed=5).matrices:
        ref = ndimage.affine_transform(x.numpy(), m.T, offset=c - m.T @ c, order=1, mode="grid-constant")
        np.testing.assert_allclose(rotate_trilinear(x, m)[0].numpy(), ref, atol=1e-10)


def test_axis_convention_point_moves_to_R_p():
    # a single bright voxel at centred position p (x, y, z) = tensor axes (D, H, W) lands on R p
    n = 9
    c = (n - 1) // 2
    p = np.array([3, 1, 0])
    x = torch.zeros(n, n, n)
    x[tuple(p + c)] = 1.0
    rz90 = Rotation.from_euler("z", 90, degrees=True).as_matrix()  # x -> y, y -> -x
    out = rotate_trilinear(x, rz90)[0]
    q = np.rint(rz90 @ p).astype(int)
    np.testing.assert_array_equal(q, [-1, 3, 0])
    assert out[tuple(q + c)] == pytest.approx(1.0, abs=1e-5)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    # a 45° rotation about z: the mass is spread over the voxels around R p, centred on R p
    r45 = Rotation.from_euler("z", 45, degrees=True).as_matrix()
    out = rotate_trilinear(x, r45)[0].double()
    coords = centred_coordinates((n, n, n), dtype=torch.float64)
    centroid = (coords * out[..., None]).sum((0, 1, 2)) / out.sum()
    np.testing.assert_allclose(centroid.numpy(), r45 @ p, atol=0.25)


@pytest.mark.parametrize("n", [16, 17])
def test_rotate_then_inverse_returns_volume_inside_sphere(n):
    x = apply_sphere_mask(_smooth_volume(n, channels=2))
    mats = haar(4, seed=1).matrices
    inside = sphere_mask((n, n, n)) & (centred_coordinates((n, n, n)).norm(dim=-1) <= (n - 1) / 2 - 1.5)
    for m in mats:
        back = rotate_trilinear(rotate_trilinear(x, m)[0], m.T)[0]
        err = (back - x)[:, inside].abs()
        scale = x[:, inside].abs().max()
        assert err.max() / scale < 0.15, err.max() / scale  # measured 0.08-0.11
        assert err.mean() / x[:, inside].abs().mean() < 0.10  # measured 0.07-0.085
    # and the round trip is far closer than an unrelated rotation would be
    wrong = rotate_trilinear(x, mats[0])[0]
    assert (wrong - x)[:, inside].abs().mean() > 5 * (back - x)[:, inside].abs().mean()


def test_identity_through_resampling_is_exact_and_batched_shapes():
    x = torch.randn(3, 2, 6, 7, 8)
    out = rotate_trilinear(x, np.stack([np.eye(3)] * 4))
    assert out.shape == (4, 3, 2, 6, 7, 8)
    torch.testing.assert_close(out[2], x, atol=1e-6, rtol=0)
    assert rotate_trilinear(x.double(), np.eye(3)).dtype == torch.float64


def test_non_cubic_round_trip_about_centre():
    x = apply_sphere_mask(_smooth_volume(12)[:, :, :10, 2:10])  # (1, 12, 10, 8)
    r = Rotation.from_euler("xyz", [20, -15, 10], degrees=True).as_matrix()
    back = rotate_trilinear(rotate_trilinear(x, r)[0], r.T)[0]
    inside = centred_coordinates(x.shape[-3:]).norm(dim=-1) <= 2.0
    assert (back - x)[:, inside].abs().max() < 0.2 * x[:, inside].abs().max()


def test_sphere_mask_is_cube_invariant_and_inscribed():
    for n in (8, 9):
        m = sphere_mask((n, n, n))
        for g in octahedral():
            assert torch.equal(rotate_exact(m, g), m)
        assert not m[0, 0, 0]
    assert sphere_mask((9, 9, 9))[4, 4, 0] and not sphere_mask((9, 9, 9))[4, 1, 0]
    # masked voxels stay on the grid under any rotation: rotating loses (almost) no mass
    x = apply_sphere_mask(torch.ones(1, 15, 15, 15, dtype=torch.float64))
    rot = rotate_trilinear(x, haar(3, seed=0).matrices)
    np.testing.assert_allclose(rot.sum((1, 2, 3, 4)).numpy(), x.sum().item(), rtol=0.02)


def test_pad_to_circumscribed_keeps_whole_volume_under_rotation():
    x = torch.ones(1, 10, 10, 10, dtype=torch.float64)
    assert circumscribed_padding((10, 10, 10)) == (4, 4, 4)  # 4.5·√3 = 7.79 -> centre 4.5 + 4
    xp = pad_to_circumscribed(x)
    assert xp.shape == (1, 18, 18, 18) and xp.sum() == 1000
    rot = rotate_trilinear(xp, haar(3, seed=2).matrices)
    np.testing.assert_allclose(rot.sum((1, 2, 3, 4)).numpy(), 1000, rtol=0.02)
    # without padding the corners are cut off
    assert rotate_trilinear(x, haar(1, seed=2).matrices).sum() < 900


def test_prepare_volume_modes():
    x = torch.ones(2, 1, 6, 6, 6)
    assert torch.equal(prepare_volume(x, "none"), x)
    assert prepare_volume(x, "sphere").sum() < x.sum()
    assert prepare_volume(x, "pad").shape[-1] > 6
    with pytest.raises(ValueError):
        prepare_volume(x, "circle")
