"""EquiLoPO options beyond the paper (issue 16): the richer invariant heads (`head: spectrum |
gram`), the head normalisation (`head_norm`), the lifting degree (`lift_lmax`) and the pooling
after the init block (`init_pool`).

Invariance: the per-voxel invariants are unchanged by any rotation of the coefficients, and
the logits of every new variant are unchanged by the 24 grid rotations (train and eval mode).
A deliberately wrong invariant (the column Gram fᵀf, which contracts the rotated index the
wrong way) is caught by the same check, so the check is not vacuous.
"""

import pytest
import torch

from volrot.errors import UserError
from volrot.models import create_model, get_entry
from volrot.models.equilopo.invariants import gram_size, power_spectrum, row_gram
from volrot.so3 import wigner as w
from volrot.so3.groups import octahedral, rotate_exact

GRID = octahedral()


pytestmark = pytest.mark.usefixtures("one_thread")


def _column_gram(x, lmax):
    """NOT invariant: f^lᵀ f^l contracts the inert row index and keeps the rotated columns."""
    b, c, _, *spatial = x.shape
    parts = []
    for l in range(lmax + 1):
        n = 2 * l + 1
        f = x[:, :, w.degree_slice(l)].reshape(b, c, n, n, *spatial)
        parts.append(torch.einsum("bcki...,bckj...->bcij...", f, f).flatten(2, 3))
    return torch.cat(parts, 2)


@pytest.mark.parametrize("lmax", [1, 2])
def test_per_voxel_invariants_under_arbitrary_rotations(lmax):
    torch.manual_seed(0)
    x = torch.randn(2, 3, w.n_coeffs(lmax), 2, 2, 2, dtype=torch.float64)
    from volrot.so3.sampling import haar_matrices

    for R in torch.from_numpy(haar_matrices(4, seed=1)):
        xr = w.rotate_coefficients(x, lmax, R, dim=2)
        torch.testing.assert_close(power_spectrum(xr, lmax), power_spectrum(x, lmax), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(row_gram(xr, lmax), row_gram(x, lmax), rtol=1e-12, atol=1e-12)
        # the same check catches the wrong contraction
        assert (_column_gram(xr, lmax) - _column_gram(x, lmax)).abs().max() > 1e-2
    assert row_gram(x, lmax).shape[2] == gram_size(lmax) == sum((2 * l + 1) * (l + 1) for l in range(lmax + 1))


def test_spectrum_squares_add_up_to_mean_square():
    torch.manual_seed(1)
    x = torch.randn(1, 2, w.n_coeffs(2), 3, 1, 1, dtype=torch.float64)
    s = power_spectrum(x, 2)
    torch.testing.assert_close((s.square().sum(2)), w.mean_square(x, dim=2) + 2 * 1e-8)
    # the trace of each row Gram block is that degree's power ‖f^l‖²/(2l+1)
    g, start = row_gram(x, 2), 0
    for l in range(3):
        n = 2 * l + 1
        iu = torch.triu_indices(n, n)
        diag = (iu[0] == iu[1]).nonzero().flatten() + start
        torch.testing.assert_close(g[:, :, diag].sum(2), x[:, :, w.degree_slice(l)].square().sum(2) / n)
        start += len(iu[0])


def _max_grid_error(model, x):
    with torch.no_grad():
        ref = model(x)
        return max(float((model(rotate_exact(x, g)) - ref).abs().max() / ref.abs().max()) for g in GRID)


VARIANTS = [
    dict(blocks=1, head="spectrum"),
    dict(blocks=2, head="gram", head_norm=True, lift_lmax=1, init_pool=True),  # equilopo_shapes
    dict(blocks=1, head="gram", coefficients="trainable", activation="global"),
    dict(blocks=1, head="softmax", head_norm=True, lift_lmax=0),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_new_heads_keep_logits_invariant_under_24_grid_rotations(variant, mode):
    torch.manual_seed(0)
    model = create_model("equilopo", num_classes=3, channels=2, lmax=1, **variant)
    x = torch.randn(3, 1, 9, 9, 9)
    if mode == "eval":  # running statistics from another batch
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(3, 1, 9, 9, 9) * 2 + 0.5)
    model.train(mode == "train")
    assert _max_grid_error(model, x) <= 1e-4
    with torch.no_grad():  # not vacuous: the logits depend on the input
        ref, other = model(x), model(x.flip(-1) + 0.5 * torch.randn_like(x))
    assert (ref - other).abs().max() > 1e-3 * ref.abs().max()


def test_a_head_that_breaks_the_symmetry_is_caught(monkeypatch):
    import volrot.models.equilopo.network as network

    torch.manual_seed(0)
    model = create_model("equilopo", num_classes=3, channels=2, blocks=1, head="gram").eval()
    x = torch.randn(2, 1, 9, 9, 9)
    assert _max_grid_error(model, x) <= 1e-4
    monkeypatch.setattr(network, "row_gram", lambda f, lmax: _column_gram(f, lmax)[:, :, : gram_size(lmax)])
    assert _max_grid_error(model, x) > 1e-3


def test_options_registered_and_validated():
    defaults = get_entry("equilopo").defaults
    assert (defaults["head"], defaults["head_norm"], defaults["lift_lmax"], defaults["init_pool"]) == ("softmax", False, None, False)
    for bad in (dict(head="mlp"), dict(head_norm="yes"), dict(lift_lmax=4), dict(lift_lmax=-1), dict(lift_lmax=1.5), dict(init_pool=1)):
        with pytest.raises(UserError):
            create_model("equilopo", num_classes=2, **bad)


def test_paper_head_keeps_its_parameters_and_names():
    # checkpoints of the paper model (softmax head) load unchanged: same state-dict keys
    model = create_model("equilopo", num_classes=2, channels=2, blocks=1)
    keys = set(model.state_dict())
    assert {"fc.weight", "fc.bias"} <= keys and not any(k.startswith("head") for k in keys)
    assert model.fc.in_features == 2
    richer = create_model("equilopo", num_classes=2, channels=2, blocks=1, head="gram", head_norm=True)
    assert richer.fc.in_features == 2 * (1 + gram_size(2))  # block output has degree 2L = 2
    assert "head_norm.running_mean" in richer.state_dict()


def test_lift_lmax_sets_the_lifting_degree():
    paper = create_model("equilopo", num_classes=2, channels=1, blocks=1)
    cheap = create_model("equilopo", num_classes=2, channels=1, blocks=1, lift_lmax=1)
    assert (paper.lift.lout, cheap.lift.lout) == (2, 1)
    assert cheap.conv0.lin == 2 and paper.conv0.lin == 4
    assert cheap(torch.randn(1, 1, 5, 5, 5)).shape == (1, 2)


def test_init_pool_halves_the_volume_before_the_blocks():
    model = create_model("equilopo", num_classes=2, channels=1, blocks=1, lift_lmax=1, init_pool=True)
    assert model.features(torch.randn(1, 1, 8, 8, 8)).shape[-3:] == (4, 4, 4)
    assert model.features(torch.randn(1, 1, 7, 7, 7)).shape[-3:] == (4, 4, 4)  # odd: centred windows


def test_shipped_shapes_recipe_builds_the_cpu_model():
    from volrot.config import build_recipe, validate_model_options

    recipe = build_recipe(None, {"arch": "equilopo", "data": "shapes"})
    validate_model_options(recipe)
    opts = recipe.model.options
    assert (opts["head"], opts["head_norm"], opts["init_pool"], recipe.data.size) == ("gram", True, True, 16)
