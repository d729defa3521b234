import os
from pathlib import Path

import pytest
import torch

# Tests run on CPU; keep them deterministic and light on the shared 2-core machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
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
