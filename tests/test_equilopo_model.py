"""EquiLoPO network: invariance down to 1³ maps, parameter counts, options, recipes, export.
Tiny configs (2 channels, lmax 1, 7³–9³ volumes). Invariance of the logits for every
activation/coefficient variant in train and eval mode, non-vacuity, field laws, gradients of
every weight, chirality and checkpoints: tests/test_models.py."""

import pytest
import torch

from volrot.errors import UserError
from volrot.models import create_model, get_entry
from volrot.models.equilopo import live_parameter_count, paper_parameter_count
from volrot.so3.check import assert_invariant
from volrot.so3.groups import octahedral

from model_helpers import calibrate

GRID = octahedral()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_odd_and_even_sizes_keep_invariance():
    # 8 blocks downsample three times: 10 -> 5 -> 3 -> 2 and 7 -> 4 -> 2 -> 1
    torch.manual_seed(1)
    model = create_model("equilopo", num_classes=2, channels=1, blocks=8)
    for size in (10, 7):
        x = torch.randn(1, 1, size, size, size)
        calibrate(model, torch.randn(2, 1, size, size, size))
        model.eval()
        assert_invariant(model, x, GRID, tol=1e-4)


def test_registered_with_options():
    entry = get_entry("equilopo")
    symmetry = entry.symmetry_of()
    assert (symmetry.name, symmetry.group.order, symmetry.continuous) == ("SO(3)", 24, True)
    assert set(entry.defaults) == {"blocks", "activation", "channels", "lmax", "filter_lmax", "coefficients", "dropout", "head", "head_norm", "lift_lmax", "init_pool"}
    model = create_model("equilopo", num_classes=2, channels=1, blocks=1)
    assert model(torch.randn(2, 1, 5, 5, 5)).shape == (2, 2)


@pytest.mark.parametrize(
    "opts",
    [dict(blocks=3), dict(activation="relu"), dict(coefficients="learned"), dict(channels=0), dict(lmax=-1), dict(dropout=1.0)],
)
def test_bad_options_are_user_errors(opts):
    with pytest.raises(UserError):
        create_model("equilopo", num_classes=2, **opts)


# docs/equilopo-math.md §2.2: the authors' counts (trainable coefficients; 417,898 is their
# code's count for adaptive/constant coefficients, which have no θ).
PAPER_COUNTS = [
    (dict(blocks=8, activation="local", coefficients="adaptive"), 2, 417_898),
    (dict(blocks=8, activation="local", coefficients="trainable"), 2, 417_955),
    (dict(blocks=8, activation="local", coefficients="trainable"), 11, 418_000),
    (dict(blocks=2, activation="local", coefficients="trainable"), 2, 175_903),
    (dict(blocks=1, activation="local", coefficients="trainable"), 2, 135_561),
    (dict(blocks=8, activation="global", coefficients="trainable"), 2, 113_035),
    (dict(blocks=2, activation="global", coefficients="trainable"), 2, 43_543),
    (dict(blocks=1, activation="global", coefficients="trainable"), 2, 31_961),
]


@pytest.mark.parametrize("opts,classes,expected", PAPER_COUNTS)
def test_paper_parameter_counts(opts, classes, expected):
    model = create_model("equilopo", num_classes=classes, channels=4, lmax=1, filter_lmax=2, **opts)
    assert paper_parameter_count(model) == expected
    live = live_parameter_count(model)
    assert live == sum(p.numel() for p in model.parameters())
    assert live < expected / 3  # most of the authors' conv weights never get a gradient


def test_live_count_of_flagship():
    model = create_model("equilopo", num_classes=2)
    assert live_parameter_count(model) == 60_298


# Table K1, "Local adaptive activation": (lr, dropout)
K1_LOCAL_ADAPTIVE = {
    "organ": (0.01, 0.01),
    "nodule": (0.0005, 0.01),
    "fracture": (0.0005, 0.0),
    "adrenal": (0.0005, 0.01),
    "vessel": (0.005, 0.01),
    "synapse": (0.01, 0.01),
}


@pytest.mark.parametrize("dataset", sorted(K1_LOCAL_ADAPTIVE))
def test_paper_recipes(dataset):
    from volrot.config import find_recipe, load_recipe_file, recipe_from_dict, validate_model_options

    path = find_recipe("equilopo", dataset)
    assert path is not None, f"volrot/recipes/equilopo_{dataset}.yaml missing"
    recipe = recipe_from_dict(load_recipe_file(path), str(path))
    validate_model_options(recipe)
    lr, dropout = K1_LOCAL_ADAPTIVE[dataset]
    assert (recipe.optim.name, recipe.optim.lr, recipe.optim.milestones) == ("adam", lr, [0.5, 0.75])
    assert (recipe.train.epochs, recipe.train.batch_size, recipe.data.name) == (100, 16, dataset)
    opts = recipe.model.options
    assert (opts["blocks"], opts["channels"], opts["lmax"], opts["dropout"]) == (8, 4, 1, dropout)


def test_exportable_in_inference():
    # without autograd the activation uses plain tensor ops, so torch.export sees no custom Function
    torch.manual_seed(3)
    model = create_model("equilopo", num_classes=2, channels=1, blocks=1).eval()
    x = torch.randn(1, 1, 6, 6, 6)
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), expected, atol=1e-6)
        # constant regions give identically zero SO(3) functions: normalisers must not divide 0/0
        zeros = torch.zeros(1, 1, 6, 6, 6)
        assert torch.isfinite(model(zeros)).all() and torch.isfinite(program.module()(zeros)).all()


@pytest.mark.parametrize("activation", ["local", "global"])
def test_gradients_finite_with_zero_functions(activation):
    # exact zero SO(3) functions (dropout, empty background) must not give NaN gradients
    torch.manual_seed(4)
    model = create_model("equilopo", num_classes=2, channels=2, blocks=1, activation=activation, dropout=0.3).train()
    x = torch.zeros(2, 1, 8, 8, 8)
    x[:, :, 3:5, 2:6, 3:6] = 1.0
    model(x).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_runs_under_bf16_autocast_with_fp32_activations():
    # polynomials, normalisers and BN statistics stay in float32 under autocast
    torch.manual_seed(5)
    model = create_model("equilopo", num_classes=2, channels=2, blocks=1, coefficients="trainable").train()
    x = torch.randn(2, 1, 6, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    y.float().sum().backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        assert (model(x) - y.float()).abs().max() < 0.05 * y.float().abs().max() + 1e-3
