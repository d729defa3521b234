import os
from pathlib import Path

import pytest
import torch

# Tests run on CPU; keep them deterministic and light on a shared 2-core machine: one thread
# unless the user asks for more with OMP_NUM_THREADS.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))


def _find_shared() -> Path:
    """`shared/` beside the checkout (CI and the main checkout), or $VOLROT_SHARED_DIR."""
    if os.environ.get("VOLROT_SHARED_DIR"):
        return Path(os.environ["VOLROT_SHARED_DIR"])
    for parent in Path(__file__).resolve().parents[1:]:
        if (parent / "shared" / "data" / "medmnist").is_dir():
            return parent / "shared"
    return Path(__file__).resolve().parents[1].parent / "shared"


SHARED = _find_shared()
MEDMNIST_DIR = SHARED / "data" / "medmnist"


@pytest.fixture
def medmnist_dir() -> Path:
    if not (MEDMNIST_DIR / "adrenalmnist3d.npz").is_file():
        pytest.skip(f"real AdrenalMNIST3D not found under {MEDMNIST_DIR}")
    return MEDMNIST_DIR


@pytest.fixture
def tiny_recipe(tmp_path):
    """A seconds-long training recipe on the built-in dataset (factory: pass overrides)."""
    from volrot.config import merge, recipe_from_dict

    def make(**sections):
        raw = {
            "model": {"arch": "resnet3d", "width": 2},
            "data": {"name": "shapes", "size": 16, "max_samples": 24},
            "optim": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 2, "batch_size": 8, "seed": 0, "device": "cpu", "out": str(tmp_path / "runs")},
        }
        return recipe_from_dict(merge(raw, sections))

    return make
