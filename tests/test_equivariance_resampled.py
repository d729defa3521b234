"""Per-layer equivariance under rotations that need resampling (45°)."""

import numpy as np
import torch

from volrot.inspection.equivariance import measure_equivariance_resampled, z45, z90
from volrot.models import create_model
from volrot.so3.sampling import rotation_angle_deg


def _volume(size=12, seed=0):
    from volrot.data.synthetic import PoseRenderer

    return torch.from_numpy(PoseRenderer("test", seed=seed, size=size, n=1).render([0]))[0]


def test_at_a_grid_rotation_the_resampled_measure_is_the_exact_one():
    torch.manual_seed(0)
    model = create_model("steerable", num_classes=3, in_channels=1, width=2, lmax=1)
    res = measure_equivariance_resampled(model, _volume(), z90().matrix.astype(float))
    assert res.layers and all(layer.rel_error < 1e-5 for layer in res.layers)
    assert all(layer.floor_rel_error < 1e-6 for layer in res.layers) and res.logits_rel_error < 1e-5


def test_45_degrees_reports_every_layer_and_no_group_law_for_regular_fields():
    assert abs(rotation_angle_deg(z45()[None])[0] - 45.0) < 1e-9
    x = _volume()
    torch.manual_seed(0)
    gcnn = create_model("gcnn", num_classes=3, in_channels=1, width=4)
    res = measure_equivariance_resampled(gcnn, x)
    assert res.layers and all(layer.rel_error is None and layer.fiber == "regular" for layer in res.layers)
    assert all(0 < layer.invariant_rel_error < 2 for layer in res.layers)
    assert all(layer.shape[-1] > 2 for layer in res.layers)  # 2³ grids hold no voxel inside the sphere
    torch.manual_seed(0)
    cnn = create_model("resnet3d", num_classes=3, in_channels=1, width=2)
    plain = measure_equivariance_resampled(cnn, x, resample="spline3")
    first = plain.layers[0]
    assert first.fiber == "spatial" and first.rel_error > first.floor_rel_error > 0  # a random conv is not equivariant
    assert plain.to_dict()["resample"] == "spline3" and 0 < plain.input_floor_rel_error < 1
    assert np.isclose(plain.to_dict()["rotation"]["angle_deg"], 45.0)
