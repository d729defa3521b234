import numpy as np
import torch

from volrot.config import DataConfig
from volrot.data import load_data
from volrot.data.synthetic import CLASS_NAMES, PIECES, generate_split
from volrot.so3.groups import octahedral
from volrot.so3.volume import rotate_exact


def test_deterministic_balanced_and_in_sphere():
    a, ya = generate_split("val", seed=3, size=28, n=64)
    b, yb = generate_split("val", seed=3, size=28, n=64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert a.shape == (64, 1, 28, 28, 28) and a.dtype == np.float32
    assert np.bincount(ya, minlength=8).tolist() == [8] * 8
    c = (28 - 1) / 2
    idx = np.argwhere(a[:, 0] > 0.3)[:, 1:]
    assert np.sqrt(((idx - c) ** 2).sum(1)).max() < c  # inside the inscribed sphere
    other, _ = generate_split("test", seed=3, size=28, n=64)
    assert not np.allclose(other, a)


def test_mirror_pair_is_a_reflection_not_a_rotation():
    left = np.array(PIECES["chiral-left"])
    right = np.array(PIECES["chiral-right"])

    def canon(cubes):
        cubes = cubes - cubes.min(0)
        return sorted(map(tuple, cubes))

    mirrored = left * np.array([1, -1, 1])
    assert canon(mirrored) == canon(right)
    assert all(canon(left @ g.matrix.T) != canon(right) for g in octahedral())


def test_bundle_and_rotation_sensitivity():
    bundle = load_data(DataConfig(name="shapes", size=20, max_samples=16))
    assert bundle.class_names == CLASS_NAMES and bundle.task == "multi-class"
    assert [len(bundle.split(s)) for s in ("train", "val", "test")] == [16, 16, 16]
    x, y = bundle.train[0]
    assert x.shape == (1, 20, 20, 20) and isinstance(y, int)
    # The line piece lies along z in canonical orientation: rotated copies differ.
    line = next(bundle.train[i][0] for i in range(16) if bundle.train[i][1] == CLASS_NAMES.index("line"))
    g = octahedral()[1]
    assert not torch.allclose(rotate_exact(line, g), line, atol=0.1)


def test_zero_outside_inscribed_sphere_so_the_eval_mask_changes_nothing():
    from volrot.so3.volume import apply_sphere_mask

    x, _ = generate_split("train", seed=0, size=20, n=8)
    t = torch.from_numpy(x)
    assert torch.equal(apply_sphere_mask(t), t)
    assert (t[:, 0, 0, 0, 0] == 0).all() and t[:, 0, 10, 10, 10].abs().sum() > 0
