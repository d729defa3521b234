"""MedMNIST3D through the medmnist package: real AdrenalMNIST3D files, generated files with the
real split sizes for the other five datasets, MD5 checks, missing files without network."""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest
import torch

from volrot.config import DataConfig
from volrot.data import canonical_name, load_data
from volrot.data.medmnist import SHORT_NAMES, file_md5, npz_name
from volrot.errors import UserError

from real_data import HAVE_ADRENAL, MEDMNIST_ROOT, SKIP_REASON  # noqa: E402

REAL_ROOT = MEDMNIST_ROOT
needs_real = pytest.mark.skipif(not HAVE_ADRENAL, reason=SKIP_REASON)
OTHERS = [n for n in SHORT_NAMES if n != "adrenal"]


def _info(flag):
    from medmnist import INFO

    return INFO[flag]


@needs_real
@pytest.mark.parametrize("size", [28, 64])
def test_real_adrenal_loads_with_official_splits(size):
    b = load_data(DataConfig(name="adrenal", root=str(REAL_ROOT), size=size))
    assert b.name == "adrenalmnist3d"
    assert [len(b.train), len(b.val), len(b.test)] == [1188, 98, 298]
    assert b.class_names == ["normal", "hyperplasia"] and b.task == "binary"
    assert b.input_size == (size, size, size) and b.in_channels == 1
    assert b.info["md5_verified"] and b.info["md5"] == _info("adrenalmnist3d")["MD5" if size == 28 else "MD5_64"]
    x, y = b.train[0]
    assert x.shape == (1, size, size, size) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and y in (0, 1)
    # same numbers as medmnist's own __getitem__ (uint8 / 255)
    import medmnist

    ref, ref_y = medmnist.AdrenalMNIST3D(split="val", root=str(REAL_ROOT), size=size)[5]
    xv, yv = b.val[5]
    np.testing.assert_allclose(xv.numpy(), ref.astype(np.float32), atol=1e-7)
    assert yv == int(ref_y[0])
    assert set(np.unique(b.train.labels)) == {0, 1}


@needs_real
def test_full_name_and_max_samples_take_first_n():
    b = load_data(DataConfig(name="AdrenalMNIST3D", root=str(REAL_ROOT), max_samples=7))
    assert [len(b.train), len(b.val), len(b.test)] == [7, 7, 7]
    raw = np.load(REAL_ROOT / "adrenalmnist3d.npz")
    np.testing.assert_array_equal(b.test.labels, raw["test_labels"][:7, 0])
    np.testing.assert_allclose(b.test[6][0][0].numpy(), raw["test_images"][6] / 255.0, atol=1e-7)


@needs_real
def test_real_adrenal_trains_tiny_model_one_epoch(tmp_path):
    train_mod = pytest.importorskip("volrot.engine.train", reason="trainer not merged yet")
    from volrot.config import recipe_from_dict

    recipe = recipe_from_dict(
        {
            "model": {"arch": "resnet3d", "width": 2},
            "data": {"name": "adrenal", "root": str(REAL_ROOT), "size": 28, "max_samples": 8},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "out": str(tmp_path), "name": "adrenal1"},
        }
    )
    res = train_mod.train(recipe, progress=False)
    assert res.best_checkpoint.is_file()
    for split in ("val", "test"):
        m = res.metrics[split]
        assert 0.0 <= m["acc"] <= 1.0 and 0.0 <= m["auc"] <= 1.0


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """npz files for the five other datasets: real split sizes, 28³ zeros, labels 0..K-1 cycling."""
    root = tmp_path_factory.mktemp("medmnist")
    for name in OTHERS:
        flag = f"{name}mnist3d"
        info = _info(flag)
        k = len(info["label"])
        arrays = {}
        for split, n in info["n_samples"].items():
            arrays[f"{split}_images"] = np.zeros((n, 28, 28, 28), np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % k).astype(np.uint8)[:, None]
        np.savez_compressed(root / npz_name(flag, 28), **arrays)
    return root


@pytest.mark.parametrize("name", OTHERS)
def test_other_datasets_resolve_by_short_and_full_name(fake_root, name):
    flag = f"{name}mnist3d"
    info = _info(flag)
    for given in (name, flag):
        assert canonical_name(given) == name
        with pytest.warns(UserWarning, match="MD5"):
            b = load_data(DataConfig(name=given, root=str(fake_root), verify=False))
        assert b.name == flag
        assert {s: len(b.split(s)) for s in ("train", "val", "test")} == info["n_samples"]
        assert b.class_names == [info["label"][str(i)] for i in range(len(info["label"]))]
        assert b.task == ("binary" if info["task"] == "binary-class" else "multi-class")
        assert b.info["python_class"] == info["python_class"] and not b.info["md5_verified"]


def test_md5_mismatch_is_an_error_by_default(fake_root):
    f = fake_root / "nodulemnist3d.npz"
    with pytest.raises(UserError) as e:
        load_data(DataConfig(name="nodule", root=str(fake_root)))
    msg = str(e.value)
    assert str(f) in msg and file_md5(f) in msg and _info("nodulemnist3d")["MD5"] in msg
    assert "data.verify=false" in msg and "\n" not in msg


def test_missing_file_names_file_folder_and_md5_without_network(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(UserError) as e:
        load_data(DataConfig(name="nodule", size=64, root=str(tmp_path / "none")))
    msg = str(e.value)
    assert "nodulemnist3d_64.npz" in msg and str(tmp_path / "none") in msg
    assert _info("nodulemnist3d")["MD5_64"] in msg and "\n" not in msg
    assert not (tmp_path / "none").exists()


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    import medmnist.dataset

    def offline(self):
        raise RuntimeError("Automatic download failed!")

    monkeypatch.setattr(medmnist.dataset.MedMNIST, "download", offline)
    root = tmp_path / "dl"
    with pytest.raises(UserError, match=r"download of vesselmnist3d\.npz failed.*MD5 b41fd4f7"):
        load_data(DataConfig(name="vessel", root=str(root), download=True))
    assert not root.exists()


def test_size_other_than_28_or_64_and_preprocess_options_are_refused():
    with pytest.raises(UserError, match="--size 32: MedMNIST3D comes in sizes 28 and 64"):
        load_data(DataConfig(name="organ", size=32))
    with pytest.raises(UserError, match=r"data.preprocess \(spacing\) applies to nifti:/dicom: data only"):
        load_data(DataConfig(name="organ", preprocess={"spacing": 2}))


def test_corrupt_npz_and_wrong_split_sizes(tmp_path):
    (tmp_path / "synapsemnist3d.npz").write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match=r"synapsemnist3d\.npz: truncated or corrupt npz"):
            load_data(DataConfig(name="synapse", root=str(tmp_path), verify=False))
        z = np.zeros((3, 28, 28, 28), np.uint8)
        lab = np.zeros((3, 1), np.uint8)
        np.savez(tmp_path / "synapsemnist3d.npz", **{f"{s}_{k}": (z if k == "images" else lab)
                                                     for s in ("train", "val", "test") for k in ("images", "labels")})
        with pytest.raises(UserError, match=r"train split holds 3 volumes.*INFO says 1230"):
            load_data(DataConfig(name="synapse", root=str(tmp_path), verify=False))
        np.savez(tmp_path / "synapsemnist3d.npz", train_images=z)
        with pytest.raises(UserError, match="not a MedMNIST file"):
            load_data(DataConfig(name="synapse", root=str(tmp_path), verify=False))
