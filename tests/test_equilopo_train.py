"""A one-block EquiLoPO model trains for an epoch on a subset of real AdrenalMNIST3D (CPU),
through the project's MedMNIST loader and trainer (`volrot.engine.train.train`), and its
checkpoint reloads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from volrot.config import recipe_from_dict


def _adrenal_npz() -> Path | None:
    # ../shared from the main checkout (/work/main) or from a worktree (/work/wt/<branch>)
    here = Path(__file__).resolve().parents[1]
    for root in (here.parent, here.parent.parent):
        npz = root / "shared" / "data" / "medmnist" / "adrenalmnist3d.npz"
        if npz.is_file():
            return npz
    return None


@pytest.mark.skipif(_adrenal_npz() is None, reason="real AdrenalMNIST3D not found in ../shared/data/medmnist")
def test_one_block_equilopo_trains_an_epoch_on_adrenal(tmp_path):
    import volrot.engine.train as engine

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = recipe_from_dict(
            {
                "model": {"arch": "equilopo", "blocks": 1, "channels": 2, "coefficients": "adaptive"},
                "data": {"name": "adrenal", "size": 28, "root": str(_adrenal_npz().parent), "max_samples": 8},
                "optim": {"name": "adam", "lr": 0.005},
                "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "amp": False, "out": str(tmp_path), "name": "run"},
            }
        )
        result = engine.train(recipe, progress=False)
    finally:
        torch.set_num_threads(old)
    assert result.best_checkpoint.is_file()
    lines = (result.run_dir / "metrics.jsonl").read_text(encoding="utf-8").strip().splitlines()
    assert len(lines) == 1
    assert np.isfinite(json.loads(lines[0])["train_loss"])
    test = result.metrics["test"]
    assert 0.0 <= test["auc"] <= 1.0 and 0.0 <= test["acc"] <= 1.0
    from volrot.artifacts.checkpoint import load_checkpoint

    model, _ = load_checkpoint(result.best_checkpoint)
    assert model.volrot_arch == "equilopo"
    # the trainer seeds torch before building the model: every parameter moved from that init
    torch.manual_seed(recipe.train.seed)
    fresh = engine.create_model("equilopo", num_classes=2, blocks=1, channels=2)
    trained = dict(model.named_parameters())
    for name, p in fresh.named_parameters():
        assert trained[name].shape == p.shape
        assert not torch.equal(trained[name], p), name
