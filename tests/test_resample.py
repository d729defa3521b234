"""Resampling paths (volrot.so3.resample): convention, accuracy, round trips."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from volrot.errors import UserError
from volrot.so3.resample import (
    check_resample, rotate_resampled, rotate_spline, round_trip, round_trip_each, round_trip_error,
)  # fmt: skip
from volrot.so3.groups import octahedral
from volrot.so3.sampling import haar
from volrot.so3.volume import apply_sphere_mask, centred_coordinates, rotate_exact, rotate_trilinear


def _smooth(n=2, size=16, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    v = np.stack([gaussian_filter(rng.normal(size=(size,) * 3), sigma) for _ in range(n)])
    r2 = (centred_coordinates((size,) * 3, dtype=torch.float64) ** 2).sum(-1).numpy()
    v = v * np.exp(-r2 / (2 * (size / 5) ** 2))  # smooth all the way down to zero at the sphere
    return apply_sphere_mask(torch.from_numpy(v[:, None]).float())


def test_spline_has_the_convention_of_trilinear_and_the_exact_rotations():
    x = _smooth()
    for g in octahedral()[::4]:  # grid rotations: spline interpolation reads exact voxels
        torch.testing.assert_close(rotate_spline(x, g.matrix)[0], rotate_exact(x, g), atol=1e-5, rtol=0)
    R = Rotation.from_rotvec([0.2, -0.4, 0.7]).as_matrix()
    spline, tri = rotate_spline(x, R)[0], rotate_trilinear(x, R)[0]
    wrong = rotate_trilinear(x, R.T)[0]
    assert (spline - tri).norm() < 0.2 * tri.norm() and (spline - tri).norm() < 0.25 * (spline - wrong).norm()
    out = rotate_resampled(x, haar(3, 0).matrices, "spline3")
    assert out.shape == (3, *x.shape) and out.dtype == x.dtype


def test_spline_round_trip_loses_less_than_trilinear():
    x = _smooth(n=3)
    mats = haar(4, 1).matrices
    tri = round_trip_error(x, mats, "trilinear")
    spl = round_trip_error(x, mats, "spline3")
    assert tri.shape == (4, 3)
    assert (spl < 0.5 * tri).all(), (spl, tri)
    assert (round_trip_error(x, np.eye(3)[None], "spline3") < 1e-6).all()


def test_round_trip_each_matches_round_trip_per_volume():
    x = _smooth(n=2, size=10)
    mats = haar(2, 3).matrices
    for method in ("trilinear", "spline3"):
        each = round_trip_each(x, mats, method)
        for b in range(2):
            torch.testing.assert_close(each[b], round_trip(x[b], mats[b], method)[0], atol=1e-5, rtol=1e-5)


def test_unknown_path_is_a_user_error():
    assert check_resample("spline3") == "spline3"
    with pytest.raises(UserError, match="unknown resampling 'cubic'"):
        check_resample("cubic")
