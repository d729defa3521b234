"""Every shipped recipe (`volrot/recipes/*.yaml`) loads, validates and builds at a tiny width.

Recipe-specific facts (the MedMNIST protocol of the zoo recipes, the steerable head width) are
checked here too; the EquiLoPO recipes' Table K1 values: tests/test_equilopo_model.py.
"""

from __future__ import annotations

import pytest
import torch

from volrot.config import REPO_RECIPES, load_recipe_file, recipe_from_dict, shipped_recipes, validate_model_options
from volrot.models import count_parameters, create_model, list_models, model_defaults, symmetry_of

#: option that scales each arch's width, and the tiny value used here
TINY = {"width": 1, "channels": 1}


def _load(name: str):
    path = REPO_RECIPES / f"{name}.yaml"
    recipe = recipe_from_dict(load_recipe_file(path), source=str(path))
    validate_model_options(recipe)
    return recipe


def test_recipes_are_shipped_for_every_arch():
    names = shipped_recipes()
    assert names and all((REPO_RECIPES / f"{n}.yaml").is_file() for n in names)
    assert {_load(n).model.arch for n in names} == set(list_models())


@pytest.mark.parametrize("name", shipped_recipes())
def test_recipe_loads_validates_and_builds_tiny(name):
    recipe = _load(name)
    arch = recipe.model.arch
    tiny = {k: v for k, v in TINY.items() if k in model_defaults(arch)}
    assert tiny, f"{arch}: no width option to shrink"
    model = create_model(arch, num_classes=2, **{**recipe.model.options, **tiny}).eval()
    assert count_parameters(model) > 0
    assert symmetry_of(model) == symmetry_of(create_model(arch, num_classes=2, **{**recipe.model.options, **tiny}))
    with torch.no_grad():
        out = model(torch.randn(1, 1, 8, 8, 8))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name,arch,augment",
    [
        ("gcnn_adrenal", "gcnn", "none"),
        ("gmr_adrenal", "gmr", "none"),
        ("resnet3d_adrenal", "resnet3d", "none"),
        ("resnet3d_adrenal_so3aug", "resnet3d", "so3"),
    ],
)
def test_zoo_recipes_follow_the_medmnist_protocol(name, arch, augment):
    recipe = _load(name)
    assert recipe.model.arch == arch and recipe.train.augment == augment
    assert (recipe.optim.name, recipe.optim.lr, recipe.train.epochs, recipe.train.batch_size) == ("adam", 1e-3, 100, 32)
    assert recipe.optim.milestones == [0.5, 0.75]
    assert count_parameters(create_model(arch, num_classes=2, **recipe.model.options)) > 0


def test_steerable_adrenal_recipe_builds_at_full_width():
    recipe = _load("steerable_adrenal")
    assert recipe.model.arch == "steerable" and recipe.data.name == "adrenal"
    model = create_model("steerable", num_classes=2, **recipe.model.options)
    assert model.fc.in_features == 8 * recipe.model.options["width"]
