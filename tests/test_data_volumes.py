"""`--data nifti:PATH` / `--data dicom:PATH`: manifests, class folders, splits, caching."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from tests.data_builders import blob_volume, nifti_dataset, write_manifest, write_nifti, write_series
from volrot.config import DataConfig
from volrot.data import cache, load_data
from volrot.data.manifest import stratified_split
from volrot.data.preprocess import PreprocessSpec, preprocess_file
from volrot.errors import UserError

SMALL = {"size": [12, 12, 12]}


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear_memory_cache()
    yield
    cache.clear_memory_cache()


def test_manifest_with_split_column(tmp_path):
    m = nifti_dataset(tmp_path, n_per_class=4, split=True)
    b = load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL))
    assert b.name == f"nifti:{m.resolve()}"
    assert b.class_names == ["left", "right"] and b.task == "binary" and b.in_channels == 1
    assert [len(b.train), len(b.val), len(b.test)] == [4, 2, 2]
    assert b.input_size == (12, 12, 12)
    x, y = b.train[0]
    assert x.shape == (1, 12, 12, 12) and x.dtype == torch.float32 and y in (0, 1)
    # the tensor is exactly what predict computes from the same file with the recorded spec
    spec = PreprocessSpec.from_dict(json.loads(json.dumps(b.preprocessing)))
    first = next(r for r in b.info["split"] if r["split"] == "train")
    np.testing.assert_array_equal(x.numpy(), preprocess_file(first["path"], spec))
    assert b.info["split_origin"] == "manifest" and len(b.info["split"]) == 8
    json.dumps(b.describe())  # JSON-serialisable for checkpoint metadata


def test_drawn_split_is_seeded_stratified_and_recorded(tmp_path):
    m = nifti_dataset(tmp_path, n_per_class=10)
    a = load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL, split_seed=3))
    b = load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL, split_seed=3))
    c = load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL, split_seed=4))
    assert a.info["split"] == b.info["split"] != c.info["split"]
    counts = collections.Counter((r["label"], r["split"]) for r in a.info["split"])
    for label in ("left", "right"):  # 10 per class: round(1.5) = 2 to val and to test
        assert (counts[(label, "train")], counts[(label, "val")], counts[(label, "test")]) == (6, 2, 2)
    assert [len(a.train), len(a.val), len(a.test)] == [12, 4, 4]
    assert "seed 3" in a.info["split_origin"]
    assert all(set(r) == {"path", "label", "split"} for r in a.info["split"])


def test_stratified_split_rounding():
    labels = [0] * 20 + [1] * 7 + [2] * 2
    s = stratified_split(labels, [0.7, 0.15, 0.15], seed=0)
    per = collections.Counter(zip(labels, s))
    assert (per[(0, "train")], per[(0, "val")], per[(0, "test")]) == (14, 3, 3)
    assert (per[(1, "train")], per[(1, "val")], per[(1, "test")]) == (5, 1, 1)
    assert per[(2, "train")] >= 1  # a tiny class keeps a training example
    assert s == stratified_split(labels, [0.7, 0.15, 0.15], seed=0)


def test_class_folders_nifti_and_max_samples(tmp_path):
    for label, name in enumerate(("benign", "malignant")):
        for i in range(8):
            write_nifti(tmp_path / "root" / name / f"case{i}.nii.gz", blob_volume(10 * label + i, label=label))
    b = load_data(DataConfig(name=f"nifti:{tmp_path / 'root'}", preprocess=SMALL, max_samples=2))
    assert b.class_names == ["benign", "malignant"]
    assert [len(b.train), len(b.val), len(b.test)] == [2, 2, 2]
    assert b.info["layout"] == "folders" and len(b.info["split"]) == 16


def test_integer_labels_and_centre_columns(tmp_path):
    rows = []
    for i in range(6):
        write_nifti(tmp_path / f"v{i}.nii", blob_volume(i, shape=(16, 16, 16), label=i % 2))
        rows.append(f"v{i}.nii,{i % 2},{['train', 'train', 'val', 'val', 'test', 'test'][i]},3,4.5,5")
    m = write_manifest(tmp_path / "m.csv", "path,label,split,center_x,center_y,center_z", rows)
    b = load_data(DataConfig(name=f"nifti:{m}", preprocess={"size": 6, "center_space": "voxel"}))
    assert b.class_names == ["0", "1"]
    # centre (3, 4.5, 5) in voxels, 6 voxels of 1 mm: x 0.5..5.5 (interpolated), y 2..7, z 2.5..7.5
    expected = preprocess_file(tmp_path / "v0.nii", PreprocessSpec(size=(6, 6, 6), center_space="voxel"), center=(3, 4.5, 5))
    np.testing.assert_array_equal(b.train[0][0].numpy(), expected)
    default = preprocess_file(tmp_path / "v0.nii", PreprocessSpec(size=(6, 6, 6)))
    assert expected.shape == (1, 6, 6, 6) and not np.array_equal(expected, default)


def test_dicom_manifest_with_series_uid(tmp_path):
    rows = []
    for i in range(6):
        uid, _ = write_series(tmp_path / f"s{i // 2}", n_slices=3, seed=i, slice_gap=4.0, shift=20 * i)  # distinct content
        rows.append(f"s{i // 2},{'ab'[i % 2]},{['train', 'val', 'test'][i // 2]},{uid}")
    m = write_manifest(tmp_path / "m.csv", "path,label,split,series_uid", rows)
    b = load_data(DataConfig(name=f"dicom:{m}", preprocess={"size": 8, "spacing": 4, "intensity": "ct"}))
    assert [len(b.train), len(b.val), len(b.test)] == [2, 2, 2]
    assert all("series_uid" in r for r in b.info["split"])
    assert b.preprocessing["intensity"] == "ct"


def test_dicom_class_folders(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            write_series(tmp_path / "root" / c / f"patient{i}", n_slices=3, seed=i, shift=20 * i + 100 * (c == "b"))
    b = load_data(DataConfig(name=f"dicom:{tmp_path / 'root'}", preprocess={"size": 6, "spacing": 8, "intensity": "ct"}, split_fractions=[0.34, 0.33, 0.33]))
    assert b.class_names == ["a", "b"] and [len(b.train), len(b.val), len(b.test)] == [2, 2, 2]


def test_memory_cache_avoids_rereading(tmp_path, monkeypatch):
    m = nifti_dataset(tmp_path, n_per_class=4, split=True)
    calls = []
    real = cache.preprocess_file
    monkeypatch.setattr(cache, "preprocess_file", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL))
    assert len(calls) == 8
    load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL))
    assert len(calls) == 8  # second load: all from memory
    load_data(DataConfig(name=f"nifti:{m}", preprocess={"size": 10}))
    assert len(calls) == 16  # another spec is another cache entry


def test_disk_cache_is_reused_by_a_new_process(tmp_path, monkeypatch):
    m = nifti_dataset(tmp_path / "d", n_per_class=4, split=True)
    cdir = tmp_path / "cache"
    first = load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL, cache_dir=str(cdir)))
    files = sorted(cdir.glob("*.npy"))
    assert len(files) == 8 and not list(cdir.glob(".*.tmp"))
    cache.clear_memory_cache()  # as in a new process

    def fail(*a, **k):
        raise AssertionError("volume re-read despite disk cache")

    monkeypatch.setattr(cache, "preprocess_file", fail)
    second = load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL, cache_dir=str(cdir)))
    for i in range(len(first.train)):
        np.testing.assert_array_equal(first.train[i][0], second.train[i][0])
    # a changed file gets a new key (content hash), so it is read again
    changed = tmp_path / "d" / "images" / "c0_2.nii.gz"
    write_nifti(changed, blob_volume(999))
    cache.clear_memory_cache()
    with pytest.raises(AssertionError, match="re-read"):
        load_data(DataConfig(name=f"nifti:{m}", preprocess=SMALL, cache_dir=str(cdir)))


def test_nifti_manifest_trains_through_the_cli_and_records_the_split(tmp_path):
    pytest.importorskip("volrot.cli", reason="CLI not merged yet")
    from typer.testing import CliRunner

    from volrot.cli import app

    m = nifti_dataset(tmp_path / "d", n_per_class=5)
    out = tmp_path / "runs"
    res = CliRunner().invoke(
        app,
        ["train", "--data", f"nifti:{m}", "--size", "12", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
         "--out", str(out), "--name", "n1", "--set", "model.width=2", "-q"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "n1" / "data.json").read_text(encoding="utf-8"))
    assert data["preprocessing"]["source"] == "volume" and data["input_size"] == [12, 12, 12]
    split = data["info"]["split"]
    assert len(split) == 10 and {r["split"] for r in split} == {"train", "val", "test"}


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"split_fractions": [0.5, 0.5]}, "data.split_fractions must be 3 non-negative fractions summing to 1"),
        ({"split_fractions": [0.0, 0.5, 0.5]}, "data.split_fractions must be 3"),
        ({"preprocess": {"spacing": 0}}, "data.preprocess.spacing must be positive"),
        ({"preprocess": {"voxel_size": 1}}, "unknown key 'data.preprocess.voxel_size'"),
    ],
)
def test_bad_data_options(tmp_path, kw, message):
    m = nifti_dataset(tmp_path, n_per_class=3)
    with pytest.raises(UserError) as e:
        load_data(DataConfig(name=f"nifti:{m}", **kw))
    assert message in str(e.value)


def test_missing_path_and_empty_kind():
    with pytest.raises(UserError, match="needs a path"):
        load_data(DataConfig(name="dicom:"))
    with pytest.raises(UserError, match="/nowhere/m.csv does not exist"):
        load_data(DataConfig(name="nifti:/nowhere/m.csv"))
