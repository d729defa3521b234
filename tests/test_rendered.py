"""`shapes` rendered directly in a rotated pose (no resampling): the rendered protocol's ground."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from volrot.data.synthetic import PoseRenderer, _rotated_cube_occupancy, generate_split
from volrot.so3.groups import octahedral
from volrot.so3.volume import centred_coordinates, rotate_trilinear


def _centroid(v):
    w = torch.as_tensor(v, dtype=torch.float64).clamp_min(0)
    p = centred_coordinates(w.shape[-3:], dtype=torch.float64)
    return (torch.einsum("dhw,dhwi->i", w, p) / w.sum()).numpy()


def test_identity_reproduces_the_canonical_split():
    images, labels = generate_split("test", seed=1, size=16, n=8)
    r = PoseRenderer("test", seed=1, size=16, n=8)
    np.testing.assert_array_equal(r.labels, labels)
    np.testing.assert_array_equal(r.render(range(8)), images)
    np.testing.assert_allclose(r.render([5, 2], np.eye(3)), images[[5, 2]], rtol=0, atol=1e-6)


def test_grid_rotations_equal_the_exact_voxel_rotation():
    r = PoseRenderer("val", seed=0, size=16, n=4)
    clean = torch.from_numpy(r.render(range(4), noise=False))
    noise = r.render(range(4)) - clean.numpy()  # the canonical noise field
    assert noise.std() > 0.03
    for g in octahedral(reflections=True)[::5]:
        posed = r.render(range(4), g.matrix.astype(float), noise=False)
        from volrot.so3.volume import rotate_exact

        np.testing.assert_allclose(posed, rotate_exact(clean, g).numpy(), rtol=0, atol=1e-6)
        # the noise is added after the pose: the same field, not a rotated one
        np.testing.assert_allclose(r.render(range(4), g.matrix.astype(float)) - posed, noise, rtol=0, atol=1e-6)


def test_any_rotation_renders_the_same_piece_in_the_rotated_pose():
    r = PoseRenderer("test", seed=2, size=20, n=8)
    canon = r.render(range(8), noise=False)
    # a rotation by 1e-7 rad takes the general (integrated) path: its quadrature error is small
    tiny = Rotation.from_rotvec([1e-7, -2e-7, 1e-7]).as_matrix()
    assert np.abs(r.render(range(8), tiny, noise=False) - canon).max() < 0.03
    R = Rotation.from_rotvec([0.3, -0.5, 0.9]).as_matrix()
    posed = r.render(range(8), R, noise=False)
    tri = rotate_trilinear(torch.from_numpy(canon), R)[0].numpy()
    back = rotate_trilinear(torch.from_numpy(canon), R.T)[0].numpy()
    for i in range(8):
        # same direction as the resampling path, and the centroid moves by R
        assert np.linalg.norm(posed[i] - tri[i]) < 0.5 * np.linalg.norm(posed[i] - back[i])
        np.testing.assert_allclose(_centroid(posed[i, 0]), R @ _centroid(canon[i, 0]), atol=0.1)
        assert abs(posed[i].sum() - canon[i].sum()) < 0.01 * canon[i].sum()


def test_rotated_cube_occupancy_is_anti_aliased_and_conserves_volume():
    for rotvec in ([0, 0, np.pi / 4], [0.3, 0.5, 0.7]):
        occ = _rotated_cube_occupancy(np.array([0.3, -0.2, 0.1]), 3.5, Rotation.from_rotvec(rotvec).as_matrix(), 16, 16)
        assert abs(occ.sum() - 3.5**3) < 1e-3 * 3.5**3
        assert occ.min() >= 0 and occ.max() <= 1 + 1e-12
        assert ((occ > 0.05) & (occ < 0.95)).sum() > 20  # partial voxels along the faces
