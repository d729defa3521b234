"""The model card: one typed, validated description of a model, read the same way from
checkpoints, ONNX and TorchScript exports; schema-1 checkpoints still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from predict_builders import CLASSES, SIZE, ct_volume, make_checkpoint, volume_spec, write_nifti
from volrot import load_model
from volrot.artifacts.card import AsIsPreprocessing, ModelCard, RecordedPreprocessing
from volrot.artifacts.checkpoint import read_card, read_tensors, save_tensors
from volrot.errors import UserError
from volrot.inference.inputs import InputPipeline


def _v1_checkpoint(path, preprocessing: dict, data_name: str):
    """A checkpoint written the way volrot 0.1 (format_version 1) wrote it: the dict below is
    what its `checkpoint_metadata` + `train` produced, facts stored twice, MedMNIST's intensity
    mapping as prose."""
    torch.manual_seed(0)
    from volrot.models import create_model

    model = create_model("resnet3d", num_classes=3, in_channels=1, width=2).eval()
    meta = {
        "format": "volrot-checkpoint",
        "format_version": 1,
        "volrot_version": "0.1.0",
        "torch_version": torch.__version__,
        "arch": "resnet3d",
        "model_config": {"num_classes": 3, "in_channels": 1, "width": 2, "depth": 18},
        "class_names": CLASSES,
        "input": {"shape": [1, SIZE, SIZE, SIZE], "dtype": "float32"},
        "data": {
            "name": data_name, "class_names": CLASSES, "in_channels": 1, "input_size": [SIZE] * 3, "task": "multi-class",
            "preprocessing": preprocessing, "split_sizes": {"train": 10, "val": 2, "test": 2},
        },
        "preprocessing": preprocessing,
        "recipe": {"model": {"arch": "resnet3d", "width": 2}, "data": {"name": data_name}},
        "parameters": 32757,
        "epoch": 3,
        "metrics": {"val": {"acc": 0.5, "auc": 0.5}},
        "selected_by": "val_auc",
    }  # fmt: skip
    save_tensors(path, model.state_dict(), meta)
    return model


MEDMNIST_V1 = {"source": "medmnist", "flag": "adrenalmnist3d", "size": SIZE, "intensity": "uint8 / 255 -> [0, 1]", "shape_transform": False}


def test_schema1_checkpoint_loads_and_its_prose_scale_becomes_a_number(tmp_path):
    ck = tmp_path / "old.safetensors"
    model = _v1_checkpoint(ck, MEDMNIST_V1, "adrenalmnist3d")
    loaded = load_model(ck)
    card = loaded.card
    assert card.arch == "resnet3d" and card.model_options == {"width": 2, "depth": 18}
    assert card.num_classes == 3 and card.in_channels == 1 and card.class_names == tuple(CLASSES)
    assert isinstance(card.preprocessing, AsIsPreprocessing)
    assert card.preprocessing.scale == pytest.approx(1 / 255) and card.preprocessing.offset == 0.0
    assert card.versions == {"volrot": "0.1.0", "torch": torch.__version__}
    assert card.epoch == 3 and card.selected_by == "val_auc" and card.metrics["val"]["acc"] == 0.5
    x = torch.randn(2, 1, SIZE, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)

    # the recorded number is what predict applies: a uint8 file is divided by 255
    voxels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, SIZE)).astype(np.uint8)
    scan = write_nifti(tmp_path / "scan.nii.gz", voxels, spacing=(1, 1, 1))
    array, summary = InputPipeline(card).load(scan)
    np.testing.assert_allclose(array[0], voxels.astype(np.float32) / 255, rtol=1e-6)
    assert summary["mode"] == "as-is" and summary["intensity"] == "value / 255"


def test_schema1_volume_checkpoint_predicts_like_a_schema2_one(tmp_path):
    v1 = tmp_path / "old.safetensors"
    _v1_checkpoint(v1, volume_spec(), "nifti:test")
    card = read_card(v1)
    assert isinstance(card.preprocessing, RecordedPreprocessing) and card.preprocessing.spec.intensity == "ct"
    assert card.data == {"name": "nifti:test", "task": "multi-class", "split_sizes": {"train": 10, "val": 2, "test": 2}}
    scan = write_nifti(tmp_path / "scan.nii.gz", ct_volume(1))
    row = load_model(v1).predict(scan)
    assert row["label"] in CLASSES and row["preprocessing"]["mode"] == "recorded"


def test_each_fact_is_stored_once(tmp_path):
    ck = make_checkpoint(tmp_path / "ck.safetensors")
    _, raw = read_tensors(ck)
    assert raw["schema_version"] == 2 and raw["format"] == "volrot-checkpoint"
    text = json.dumps(raw)
    for duplicate in ("num_classes", "in_channels", "input_size", "model_config", "format_version", "volrot_version"):
        assert f'"{duplicate}"' not in text, duplicate
    assert text.count('"benign"') == 1, "class names stored more than once"
    assert "preprocessing" not in raw["data"] and "class_names" not in raw["data"]
    card = read_card(ck)
    assert card.model_config == {"num_classes": 3, "in_channels": 1, **card.model_options}
    assert ModelCard.from_dict(card.to_dict(), where="x") == card
    assert ModelCard.from_json(card.to_json(), where="x") == card


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: {**m, "schema_version": 3}, "newer than this volrot reads"),
        (lambda m: {**m, "schema_version": "2"}, "unknown model card schema"),
        (lambda m: {**m, "surprise": 1}, "unknown key 'surprise'"),
        (lambda m: {**m, "format": "volrot-checkpoint-train-state"}, "a training-state file"),
        (lambda m: {**m, "class_names": ["a", "a", "b"]}, "repeats a name"),
        (lambda m: {**m, "class_names": "abc"}, "non-empty list of strings"),
        (lambda m: {**m, "input": {"shape": [1, SIZE, SIZE], "dtype": "float32"}}, "4 positive integers"),
        (lambda m: {**m, "input": {"shape": [1, SIZE, SIZE, SIZE], "dtype": "float64"}}, "must be float32"),
        (lambda m: {**m, "model_options": {"width": 2, "num_classes": 3}}, "is not an option"),
        (lambda m: {**m, "preprocessing": {"source": "generated"}}, "without its 'scale'"),
        (lambda m: {**m, "preprocessing": {"source": "generated", "scale": float("nan")}}, "finite number"),
        (lambda m: {**m, "preprocessing": {**m["preprocessing"], "size": [8, 8, 8]}}, "differs from the input shape"),
        (lambda m: {**m, "epoch": -1}, "integer >= 0"),
    ],
)
def test_card_is_validated_once_at_load(tmp_path, change, fragment):
    tensors, raw = read_tensors(make_checkpoint(tmp_path / "ck.safetensors"))
    bad = tmp_path / "bad.safetensors"
    save_tensors(bad, tensors, change(raw))
    with pytest.raises(UserError, match=fragment):
        load_model(bad)


def test_training_writes_a_schema2_card_with_executable_preprocessing(tiny_recipe):
    from volrot.engine.train import train

    result = train(tiny_recipe(train={"epochs": 1}), progress=False)
    card = read_card(result.best_checkpoint)
    assert card.arch == "resnet3d" and card.class_names and card.input_shape == (1, 16, 16, 16)
    assert isinstance(card.preprocessing, AsIsPreprocessing) and card.preprocessing.scale == 1.0
    assert card.recipe["model"]["arch"] == "resnet3d" and set(card.metrics) == {"val", "test"}
    assert card.parameters == sum(p.numel() for p in load_model(result.best_checkpoint).model.parameters())
    assert card.data["name"] == "shapes" and "class_names" not in card.data


def test_exports_carry_the_checkpoint_card(tmp_path):
    pytest.importorskip("onnxruntime")
    from volrot.artifacts.export import export_checkpoint, load_artifact
    from volrot.inference.predict import OnnxModel

    ck = make_checkpoint(tmp_path / "ck.safetensors")
    card = read_card(ck)
    export_checkpoint(ck, "onnx", tmp_path / "m.onnx", real_data=False, exporter="torchscript")
    export_checkpoint(ck, "torchscript", tmp_path / "m.pt", real_data=False)
    for exported in (OnnxModel(tmp_path / "m.onnx").card, load_artifact(tmp_path / "m.pt").card):
        assert exported.format == "volrot-export" and exported.export["checkpoint"] == "ck.safetensors"
        assert exported.replace(format=card.format, export=None) == card
