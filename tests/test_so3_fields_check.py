"""Field laws (`volrot.so3.fields`) are group actions with invariant parts, and the one check
(`volrot.so3.check`) measures and rejects what it should."""

import math

import numpy as np
import pytest
import torch
from e3nn import o3

from volrot.so3.check import (
    assert_equivariant,
    assert_invariant,
    equivariance_error,
    input_sensitivity,
    invariance_errors,
    relative_error,
    relative_errors,
    tolerance,
)
from volrot.so3.fields import Irreps, Regular, Scalar, SO3Fourier
from volrot.so3.groups import cube_group
from volrot.so3.volume import rotate_exact
from volrot.so3.wigner import n_coeffs

D4, O, OH = cube_group("D4"), cube_group("O"), cube_group("Oh")
LAWS = {
    "scalar": (Scalar(), OH, (2, 3, 5, 5, 5)),
    "regular-D4": (Regular(group=D4), D4, (2, 3 * 8, 5, 5, 5)),
    "irreps": (Irreps(irreps=o3.Irreps("2x0e+1x1o+1x2e")), OH, (2, 2 + 3 + 5, 5, 5, 5)),
    "so3-fourier": (SO3Fourier(), O, (2, 2, n_coeffs(2), 5, 5, 5)),
}


@pytest.mark.parametrize("name", list(LAWS))
def test_field_law_is_a_group_action_with_an_invariant_part(name):
    """T_e = id, T_g T_h = T_gh, and invariant(T_g f) = rotate_exact(invariant(f))."""
    law, group, shape = LAWS[name]
    f = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(law.transform(f, group[0]), f)
    for g, h in [(group[1], group[group.order - 1]), (group[group.order // 2], group[1])]:
        gh = group[int(group.cayley[g.index, h.index])]
        torch.testing.assert_close(law.transform(law.transform(f, h), g), law.transform(f, gh), atol=1e-5, rtol=0)  # e3nn D: float32 tables
        assert relative_error(law.invariant(law.transform(f, g)), rotate_exact(law.invariant(f), g)) < 1e-6
    g = group[1]
    if name != "scalar":  # the law does more than rotate space
        assert relative_error(law.transform(f, g), rotate_exact(f, g)) > 1e-2


def test_regular_law_rejects_elements_outside_its_group_and_so3_rejects_reflections():
    f = torch.randn(1, 8, 3, 3, 3)
    outside = D4.outside(O)[0]
    with pytest.raises(KeyError, match="not in the group D4"):
        Regular(group=D4).transform(f, outside)
    with pytest.raises(ValueError, match="rotations only"):
        SO3Fourier().transform(torch.randn(1, 1, 10, 3, 3, 3), OH[24])


def test_relative_error_and_tolerances():
    a = torch.tensor([1.0, -2.0, 4.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a + torch.tensor([0.0, 0.4, 0.0]), a) == pytest.approx(0.1)
    assert relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_error(torch.ones(3), torch.zeros(3)) == math.inf
    rel, rel_max = relative_errors(a + torch.tensor([0.0, 0.4, 0.0]), a)
    assert rel == pytest.approx(0.4 / math.sqrt(21)) and rel_max == pytest.approx(0.1)
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.5])) == pytest.approx(0.2)
    assert tolerance(torch.float64) < tolerance(torch.float32) < tolerance(torch.bfloat16)


class _SumOfSquares(torch.nn.Module):
    """Invariant under every cube element (a sum over space); optionally broken by a weight."""

    def __init__(self, broken: bool = False):
        super().__init__()
        self.broken = broken

    def forward(self, x):
        w = torch.linspace(1.0, 2.0, x.shape[-1]) if self.broken else torch.ones(x.shape[-1])
        return ((x**2) * w).sum(dim=(2, 3, 4))


def test_assert_invariant_passes_exact_and_names_the_offending_element():
    x = torch.randn(2, 1, 6, 6, 6)
    assert assert_invariant(_SumOfSquares(), x, OH.elements) < 1e-6
    errors = invariance_errors(_SumOfSquares(broken=True), x, OH.elements)
    assert errors[0] == 0.0 and max(errors) > 1e-2
    with pytest.raises(AssertionError, match=r"logits not invariant: relative error .* under element \d+"):
        assert_invariant(_SumOfSquares(broken=True), x, OH.elements)
    # train mode: one forward per element, the same numbers here (no batch statistics)
    model = _SumOfSquares(broken=True).train()
    assert invariance_errors(model, x, OH.elements) == pytest.approx(errors, abs=1e-6)


def test_equivariance_error_of_a_layer_and_input_sensitivity():
    conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
    k = torch.tensor([1.0, 2.0, 1.0])
    with torch.no_grad():  # a separable symmetric kernel: equivariant under every grid element
        conv.weight.copy_((k[:, None, None] * k[None, :, None] * k[None, None, :])[None, None])
    x = torch.randn(1, 1, 7, 7, 7)
    assert assert_equivariant(conv, x, OH.elements, Scalar(), Scalar()) < 1e-6
    with torch.no_grad():
        conv.weight[0, 0, 0, 0, 0] += 1.0
    assert equivariance_error(conv, x, OH[1], Scalar(), Scalar()) > 1e-2
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(conv, x, OH.elements, Scalar(), Scalar())
    assert input_sensitivity(_SumOfSquares(), x, 2 * x) == pytest.approx(3.0)
