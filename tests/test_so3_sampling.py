import numpy as np
import pytest
from scipy import stats

from volrot.so3.groups import octahedral
from volrot.so3.sampling import (
    axis_sweep,
    covering_radius_deg,
    haar,
    haar_angle_cdf,
    haar_matrices,
    nearest_neighbour_deg,
    octahedral_set,
    rotation_angle_deg,
    so3_grid,
)


def _assert_rotations(m):
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)


def test_axis_sweep_30_gives_36_labelled_rotations():
    s = axis_sweep(30)
    assert len(s) == 36 and s.details["count"] == 36 and s.details["per_axis"] == 12
    _assert_rotations(s.matrices)
    assert [lab["axis"] for lab in s.labels] == ["x"] * 12 + ["y"] * 12 + ["z"] * 12
    assert [lab["angle_deg"] for lab in s.labels[:12]] == [30.0 * k for k in range(12)]
    # right-hand rule, matching the voxel generators of octahedral(): Rz(+90) and Rx(+90)
    gens = {g.ops: g.matrix for g in octahedral() if len(g.ops) == 1}
    np.testing.assert_allclose(s.matrices[24 + 3], gens[(("rot90", 1, (0, 1)),)], atol=1e-12)
    np.testing.assert_allclose(s.matrices[0 + 3], gens[(("rot90", 1, (1, 2)),)], atol=1e-12)
    # each rotation fixes its own axis, and its angle is the sweep angle folded into [0, 180]
    for m, lab in zip(s.matrices, s.labels):
        e = np.eye(3)["xyz".index(lab["axis"])]
        np.testing.assert_allclose(m @ e, e, atol=1e-12)
        assert rotation_angle_deg(m[None])[0] == pytest.approx(180 - abs(180 - lab["angle_deg"]), abs=1e-6)


def test_axis_sweep_uneven_step():
    assert len(axis_sweep(25)) == 3 * 15
    with pytest.raises(ValueError):
        axis_sweep(0)


@pytest.mark.parametrize("spacing", [60.0, 30.0])
def test_so3_grid_spacing_and_determinism(spacing):
    g = so3_grid(spacing)
    _assert_rotations(g.matrices)
    d = g.details
    assert d["count"] == len(g) == len(g.labels)
    # measured spacing (max nearest-neighbour distance) is at most the target and close to it
    assert 0.85 * spacing <= d["spacing_deg"] <= spacing
    assert d["spacing_deg"] == pytest.approx(nearest_neighbour_deg(g.matrices).max())
    # no near-duplicates, and every rotation of SO(3) is within about one spacing of the set
    assert d["min_nearest_neighbour_deg"] > 0.5 * spacing
    assert d["covering_radius_deg"] < 1.1 * spacing
    np.testing.assert_array_equal(so3_grid(spacing).matrices, g.matrices)


def test_so3_grid_size_grows_like_inverse_cube_of_spacing():
    n60, n30 = len(so3_grid(60)), len(so3_grid(30))
    assert 40 <= n60 <= 80
    assert 6 <= n30 / n60 <= 12  # ~2³ for a uniform 3-dimensional set


def test_haar_is_seeded():
    a, b, c = haar(16, seed=3), haar(16, seed=3), haar(16, seed=4)
    _assert_rotations(a.matrices)
    np.testing.assert_array_equal(a.matrices, b.matrices)
    assert not np.allclose(a.matrices, c.matrices)
    assert a.details == {"count": 16, "seed": 3}


def _ks_against_haar(matrices):
    theta = np.radians(rotation_angle_deg(matrices))
    return stats.kstest(theta, haar_angle_cdf)


def test_haar_angles_follow_haar_density():
    res = _ks_against_haar(haar(2000, seed=0).matrices)
    assert res.pvalue > 0.01, res
    # the test has power: uniformly distributed angles are rejected
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    axes = rng.normal(size=(2000, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    wrong = Rotation.from_rotvec(axes * rng.uniform(0, np.pi, size=(2000, 1))).as_matrix()
    assert _ks_against_haar(wrong).pvalue < 1e-6


@pytest.mark.parametrize("spacing", [45.0, 20.0])
def test_so3_grid_angles_follow_haar_density(spacing):
    g = so3_grid(spacing)
    res = _ks_against_haar(g.matrices)
    # deterministic low-discrepancy set: KS distance far below a random sample's ~1/sqrt(n)
    assert res.statistic < 0.5 / np.sqrt(len(g)), res
    assert res.pvalue > 0.5


def test_haar_angle_cdf_integrates_density():
    t = np.linspace(0, np.pi, 2001)
    pdf = (1 - np.cos(t)) / np.pi
    cdf = np.concatenate([[0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(t))])
    np.testing.assert_allclose(haar_angle_cdf(t), cdf, atol=1e-6)
    assert haar_angle_cdf(np.pi) == pytest.approx(1.0)


def test_octahedral_set_and_spacing_helpers():
    s = octahedral_set()
    assert len(s) == 24 and s.details["exact"]
    # nearest cube rotation to any cube rotation is 90° away
    np.testing.assert_allclose(nearest_neighbour_deg(s.matrices), 90.0, atol=1e-6)
    assert sorted({round(lab["angle_deg"]) for lab in s.labels}) == [0, 90, 120, 180]
    # covering radius of the cube group: the farthest rotation is at least 60° from all 24
    assert 55 < covering_radius_deg(s.matrices, probes=5000) < 70


def test_haar_matrices_are_haar_and_seeded():
    """The one Haar sampler (augmentation, the haar protocol, EquiLoPO's resampler, tests)."""
    m = haar_matrices(2000, 0)
    _assert_rotations(m)
    angles = np.arccos(np.clip((np.trace(m, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert stats.kstest(angles, haar_angle_cdf).pvalue > 0.01
    np.testing.assert_array_equal(haar_matrices(2000, 0), m)
    np.testing.assert_array_equal(haar(5, seed=3).matrices, haar_matrices(5, 3))
    assert not np.array_equal(haar_matrices(5, 1), haar_matrices(5, 2))
