import pickle

import pytest
import torch

from volrot import load_model
from volrot.artifacts.checkpoint import checkpoint_metadata, read_tensors, save_checkpoint
from volrot.errors import UserError
from volrot.models import create_model


def _model():
    torch.manual_seed(0)
    m = create_model("resnet3d", num_classes=3, in_channels=1, width=2)
    m.eval()
    return m


def _card(m, **extra):
    """The card `volrot train` writes for a tiny generated-data model."""
    pre = {"source": "generated", "size": 12, "intensity": "none", "scale": 1.0, "offset": 0.0}
    return checkpoint_metadata(m, class_names=["a", "b", "c"], input={"shape": [1, 12, 12, 12], "dtype": "float32"}, preprocessing=pre, **extra)


def test_round_trip_weights_metadata_and_outputs(tmp_path):
    m = _model()
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, m, _card(m, metrics={"val": {"auc": 0.5}}))
    loaded = load_model(path)
    assert loaded.meta["arch"] == "resnet3d" and loaded.card.arch == "resnet3d"
    assert loaded.card.model_options["width"] == 2 and loaded.card.model_config["num_classes"] == 3
    assert loaded.meta["class_names"] == ["a", "b", "c"] and loaded.card.class_names == ("a", "b", "c")
    assert loaded.card.metrics == {"val": {"auc": 0.5}}
    assert not loaded.model.training
    x = torch.randn(2, 1, 12, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), m(x), rtol=0, atol=0)
        torch.testing.assert_close(torch.from_numpy(loaded(x.numpy())), m(x), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temp file"


def test_crafted_pickle_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "best.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    with pytest.raises(UserError, match="not a volrot checkpoint"):
        load_model(path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "torch.pt")
    with pytest.raises(UserError, match="not a volrot checkpoint"):
        load_model(tmp_path / "torch.pt")
    assert not marker.exists()


def test_truncated_and_missing_checkpoint(tmp_path):
    m = _model()
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, m, _card(m))
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError):
        load_model(tmp_path / "cut.safetensors")
    with pytest.raises(UserError, match="not found"):
        read_tensors(tmp_path / "nope.safetensors")
