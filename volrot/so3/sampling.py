"""Sets of rotations: axis sweeps, SO(3) grids, Haar samples, the cube rotations as a set.

Axis convention: spatial tensor axes (D, H, W) = (x, y, z); a rotation matrix R acts on
centred voxel coordinates, and rotating a volume by R means out(R p) = in(p). The cube group
itself (exact on the voxel grid) lives in `volrot.so3.groups`.

`haar_matrices` is the one Haar sampler of volrot (scipy `Rotation.random`); everything that
needs random rotations (the `haar` protocol, `--augment so3`, the SO(3) resampler of EquiLoPO's
activations, tests) draws from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from volrot.so3.groups import octahedral

# ---------------------------------------------------------------------------------------------
# Continuous rotation sets (interpolated on the voxel grid): axis sweeps, SO(3) grids, Haar.
# ---------------------------------------------------------------------------------------------

_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


@dataclass(frozen=True)
class RotationSet:
    """A named set of rotations with one label per rotation and a description of the set.

    `matrices` is a float64 array (N, 3, 3) of proper rotations acting on centred (x, y, z)
    coordinates (see the module docstring). `labels[i]` is a dict with at least `label` (str),
    `axis` ("x"/"y"/"z" for rotations about a coordinate axis, else None) and `angle_deg` (the
    rotation angle in [0, 180]; for axis sweeps the signed sweep angle in [0, 360)).
    `details` is JSON-serialisable (count, step/spacing/seed, measured spacing...).
    """

    name: str
    matrices: np.ndarray
    labels: list[dict]
    details: dict

    def __len__(self) -> int:
        return len(self.matrices)


def rotation_angle_deg(matrices: np.ndarray) -> np.ndarray:
    """Rotation angle θ ∈ [0°, 180°] of each matrix in (N, 3, 3) (θ = geodesic distance to I)."""
    m = np.asarray(matrices, dtype=np.float64)
    cos = (np.trace(m, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def haar_angle_cdf(theta_rad: np.ndarray) -> np.ndarray:
    """CDF of the rotation angle of a Haar-uniform rotation: (θ − sin θ)/π, θ ∈ [0, π].

    It integrates the density (1 − cos θ)/π.
    """
    t = np.clip(np.asarray(theta_rad, dtype=np.float64), 0.0, np.pi)
    return (t - np.sin(t)) / np.pi


def _as_quaternions(matrices: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(np.asarray(matrices, dtype=np.float64)).as_quat()


def _chord_to_angle_deg(chord: np.ndarray) -> np.ndarray:
    # unit quaternions q1, q2 of rotations at geodesic angle θ: |q1 − q2| = 2 sin(θ/4) (q1·q2 ≥ 0)
    return np.degrees(4.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))


def nearest_neighbour_deg(matrices: np.ndarray) -> np.ndarray:
    """For each rotation of the set, the geodesic angle (degrees) to its nearest other member.

    Works on unit quaternions with both signs (q and −q are the same rotation) in a k-d tree.
    """
    q = _as_quaternions(matrices)
    if len(q) < 2:
        return np.full(len(q), np.nan)
    tree = cKDTree(np.concatenate([q, -q]))
    dist, _ = tree.query(q, k=2)  # k=1 is the point itself
    return _chord_to_angle_deg(dist[:, 1])


def covering_radius_deg(matrices: np.ndarray, probes: int = 20000, seed: int = 0) -> float:
    """Estimated covering radius (degrees): the largest distance from a Haar-random probe
    rotation to its nearest member of the set, over `probes` seeded probes (a lower bound on the
    true covering radius that tightens as `probes` grows)."""
    q = _as_quaternions(matrices)
    tree = cKDTree(np.concatenate([q, -q]))
    dist, _ = tree.query(_as_quaternions(haar(probes, seed).matrices), k=1)
    return float(_chord_to_angle_deg(dist).max())


def axis_sweep(step_deg: float = 30.0) -> RotationSet:
    """Rotations about x, then y, then z by 0, step, 2·step, ... < 360 degrees (30° → 36).

    Positive angles follow the right-hand rule about the axis (Rz(+90°) sends x to y). Each
    axis starts at 0°, so the identity appears once per axis.
    """
    if not 0 < step_deg <= 360:
        raise ValueError(f"step_deg must be in (0, 360], got {step_deg}")
    count = int(np.ceil(360.0 / step_deg - 1e-9))
    angles = step_deg * np.arange(count)
    mats, labels = [], []
    for name, axis in _AXES.items():
        rotvecs = np.radians(angles)[:, None] * np.asarray(axis)[None]
        mats.append(Rotation.from_rotvec(rotvecs).as_matrix())
        labels += [{"label": f"{name} {a:g}°", "axis": name, "angle_deg": float(a)} for a in angles]
    details = {"count": 3 * count, "step_deg": float(step_deg), "per_axis": count}
    return RotationSet("axes", np.concatenate(mats), labels, details)


def super_fibonacci(n: int) -> np.ndarray:
    """`n` unit quaternions (x, y, z, w) on a super-Fibonacci spiral (Alexa, CVPR 2022).

    Deterministic and near-uniform on S³, hence on SO(3).
    """
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041  # the paper's two irrational constants
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    alpha, beta = 2.0 * np.pi * s / phi, 2.0 * np.pi * s / psi
    return np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], 1)


def _sf_spacing(n: int) -> float:
    return float(nearest_neighbour_deg(Rotation.from_quat(super_fibonacci(n)).as_matrix()).max())


def so3_grid(spacing_deg: float = 30.0) -> RotationSet:
    """A deterministic near-uniform set of rotations whose spacing is at most `spacing_deg`.

    Points are a super-Fibonacci spiral (Alexa 2022) of size n. *Spacing* is measured as the
    largest nearest-neighbour geodesic distance over the set, max_i min_{j≠i} θ(R_i, R_j);
    n is the result of a bisection on n for measured spacing ≤ `spacing_deg` (30° → a few
    hundred rotations, 60° → about 50). `details` also records the smallest nearest-neighbour
    distance and the covering radius estimated with 20 000 seeded Haar probes.
    """
    if not 3.0 <= spacing_deg <= 180.0:
        raise ValueError(f"spacing_deg must be in [3, 180], got {spacing_deg}")
    lo, hi = 1, 8
    while _sf_spacing(hi) > spacing_deg:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: spacing(hi) <= target
        mid = (lo + hi) // 2
        if _sf_spacing(mid) <= spacing_deg:
            hi = mid
        else:
            lo = mid
    matrices = Rotation.from_quat(super_fibonacci(hi)).as_matrix()
    nn = nearest_neighbour_deg(matrices)
    angles = rotation_angle_deg(matrices)
    labels = [{"label": f"g{i}", "axis": None, "angle_deg": float(a)} for i, a in enumerate(angles)]
    details = {
        "count": hi,
        "method": "super-Fibonacci spiral (Alexa 2022)",
        "target_spacing_deg": float(spacing_deg),
        "spacing_deg": float(nn.max()),
        "spacing_definition": "max over the set of the nearest-neighbour geodesic angle",
        "min_nearest_neighbour_deg": float(nn.min()),
        "covering_radius_deg": covering_radius_deg(matrices),
        "covering_radius_definition": "max over 20000 Haar probes (seed 0) of the distance to the set",
    }
    return RotationSet("so3-grid", matrices, labels, details)


def haar_matrices(n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """`n` Haar-uniform random rotation matrices (n, 3, 3), float64, reproducible from `seed`
    (an int for `numpy.random.default_rng`, or a Generator). scipy `Rotation.random`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    try:
        rot = Rotation.random(n, rng=rng)
    except TypeError:  # scipy < 1.15 names the generator `random_state`
        rot = Rotation.random(n, random_state=rng)
    return rot.as_matrix().reshape(n, 3, 3)


def haar(n: int, seed: int = 0) -> RotationSet:
    """`n` Haar-uniform random rotations from `seed` (`haar_matrices`) as a labelled set."""
    matrices = haar_matrices(n, seed)
    angles = rotation_angle_deg(matrices)
    labels = [{"label": f"h{i}", "axis": None, "angle_deg": float(a)} for i, a in enumerate(angles)]
    return RotationSet("haar", matrices, labels, {"count": n, "seed": int(seed)})


def octahedral_set() -> RotationSet:
    """The 24 cube rotations of `octahedral()` as a `RotationSet` (labels `o0`..`o23`)."""
    group = octahedral()
    labels = [{"label": f"o{g.index}", "axis": None, "angle_deg": g.angle_deg} for g in group]
    details = {"count": len(group), "exact": True}
    return RotationSet("octahedral", np.stack([g.matrix.astype(np.float64) for g in group]), labels, details)
