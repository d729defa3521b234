import os
from pathlib import Path

import pytest
import torch

# Tests run on CPU; keep them deterministic and light on a shared 2-core machine: one thread
# unless the user asks for more with OMP_NUM_THREADS.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))


@pytest.fixture
def one_thread():
    """One torch thread for this test whatever OMP_NUM_THREADS says (the EquiLoPO tests:
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def medmnist_dir() -> Path:
    """The real AdrenalMNIST3D folder ($VOLROT_MEDMNIST_ROOT, see tests/real_data.py), or skip."""
    from real_data import HAVE_ADRENAL, MEDMNIST_ROOT, SKIP_REASON

    if not HAVE_ADRENAL:
        pytest.skip(SKIP_REASON)
    return MEDMNIST_ROOT


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
