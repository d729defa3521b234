import numpy as np
import torch
from scipy import stats

from volrot.engine.augment import _haar_batch, augment_batch
from volrot.so3.groups import octahedral
from volrot.so3.sampling import haar_angle_cdf
from volrot.so3.volume import rotate_exact, rotate_trilinear, rotate_trilinear_each


def test_so3_augmentation_rotations_are_haar_and_follow_torch_seed():
    """Drawn by the one Haar sampler, seeded from torch's generator (the trainer seeds it)."""
    torch.manual_seed(0)
    m = _haar_batch(2000).double().numpy()
    np.testing.assert_allclose(m @ m.transpose(0, 2, 1), np.broadcast_to(np.eye(3), m.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-6)
    angles = np.arccos(np.clip((np.trace(m, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert stats.kstest(angles, haar_angle_cdf).pvalue > 0.01
    torch.manual_seed(0)
    np.testing.assert_array_equal(_haar_batch(2000).double().numpy(), m)
    x = torch.randn(2, 1, 6, 6, 6)
    torch.manual_seed(1)
    first = augment_batch(x, "so3")
    torch.manual_seed(1)
    assert torch.equal(augment_batch(x, "so3"), first)


def test_per_volume_rotation_matches_single_rotation_path():
    torch.manual_seed(1)
    x = torch.randn(3, 2, 9, 9, 9)
    mats = _haar_batch(3)
    each = rotate_trilinear_each(x, mats)
    for b in range(3):
        torch.testing.assert_close(each[b], rotate_trilinear(x[b], mats[b])[0], atol=1e-6, rtol=1e-6)


def test_augment_batch_modes():
    torch.manual_seed(2)
    x = torch.randn(4, 1, 8, 8, 8)
    assert augment_batch(x, "none") is x
    out = augment_batch(x, "octahedral")
    group = octahedral()
    for b in range(4):  # each volume is one exact grid rotation of its input
        assert any(torch.equal(out[b], rotate_exact(x[b], g)) for g in group)
    so3 = augment_batch(x, "so3")
    assert so3.shape == x.shape and not torch.allclose(so3, x)
