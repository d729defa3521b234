"""GMR-Conv 3D (`gmr`): kernel construction, the two forms agree, options.

Exact Oh invariance (both conv forms, train and eval), field laws, gradients, the off-grid
negative control and checkpoints: tests/test_models.py.
"""

import math

import pytest
import torch

from volrot.errors import UserError
from volrot.models import count_parameters, create_model, get_entry
from volrot.models.gmr import GMRConv3d, shell_geometry
from volrot.so3.groups import octahedral
from volrot.so3.volume import rotate_exact


@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_shell_geometry(k):
    radii, mask, centres, spacing = shell_geometry(k)
    n = (k + 1) // 2
    assert centres.numel() == n
    assert spacing == pytest.approx(k / (2 * (n - 1)))
    assert centres[0] == 0 and centres[-1] == pytest.approx(k / 2)
    # corners outside the inscribed sphere are masked; the face centres are kept
    cube = mask.view(k, k, k)
    assert cube[0, 0, 0] == 0 and cube[0, k // 2, k // 2] == 1
    assert torch.equal(mask.bool(), radii <= k / 2)


def test_initial_sigma_is_fwhm_of_spacing():
    conv = GMRConv3d(2, 3, 7)
    _, _, _, spacing = shell_geometry(7)
    torch.testing.assert_close(conv.log_sigma.exp(), torch.full((4,), spacing / 2.355))


def test_kernel_is_radial_and_invariant_under_all_48():
    conv = GMRConv3d(2, 3, 5)
    kernel = conv.dense_kernel().detach()
    for g in octahedral(reflections=True):
        torch.testing.assert_close(rotate_exact(kernel, g), kernel, rtol=0, atol=0)
    # one value per shell mixture: equal radii give equal weights
    radii = shell_geometry(5)[0].view(5, 5, 5)
    assert torch.equal(kernel[..., 0, 1, 2], kernel[..., 2, 1, 0])
    assert radii[0, 1, 2] == radii[2, 1, 0]


def test_dense_and_shell_forms_agree():
    torch.manual_seed(0)
    dense = GMRConv3d(3, 4, 7, "dense")
    shells = GMRConv3d(3, 4, 7, "shells")
    shells.load_state_dict(dense.state_dict())
    x = torch.randn(2, 3, 9, 9, 9)
    torch.testing.assert_close(shells(x), dense(x), rtol=1e-4, atol=1e-5)
    # sigma is trainable in both forms
    dense(x).sum().backward()
    assert dense.log_sigma.grad is not None and dense.log_sigma.grad.abs().sum() > 0


def test_he_variance_of_materialised_kernel():
    torch.manual_seed(0)
    conv = GMRConv3d(64, 64, 7)
    k = conv.dense_kernel().detach()
    fan_in_var = (k**2).sum(dim=(1, 2, 3, 4)).mean()  # Σ_{i,u} K² per output channel ≈ 2
    assert 1.6 < float(fan_in_var) < 2.4


def test_registry_entry_parameters_and_bad_options():
    entry = get_entry("gmr")
    symmetry = entry.symmetry_of()
    assert (symmetry.name, symmetry.group.order, symmetry.continuous) == ("Oh", 48, False)
    assert entry.defaults["kernel_sizes"] == (7, 7, 5, 5)
    model = create_model("gmr", num_classes=2, width=8)
    # GMR convs hold C_in·C_out·n weights (n = (k+1)/2 shells) instead of C_in·C_out·k³
    gmr_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, GMRConv3d))
    expected = 8 * 4 + sum(
        (a * b + b * b) * n + (b * b + b * b) * n
        for a, b, n in [(8, 8, 4), (8, 16, 4), (16, 32, 3), (32, 64, 3)]
    )
    assert gmr_weights == expected
    assert count_parameters(model) > gmr_weights
    with pytest.raises(UserError, match="model.kernel_sizes"):
        create_model("gmr", num_classes=2, kernel_sizes=[7, 7, 4, 5])
    with pytest.raises(UserError, match="model.conv_form"):
        create_model("gmr", num_classes=2, conv_form="fft")
    with torch.no_grad():
        assert math.isfinite(float(model(torch.randn(1, 1, 12, 12, 12)).sum()))
