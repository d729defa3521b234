"""Duplicate content across classes or splits (#17 item 11): the same volume under two labels,
or one DICOM series in two splits, is refused unless data.allow_duplicates is true."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.data_builders import blob_volume, write_nifti, write_series
from volrot.config import DataConfig
from volrot.data import cache, load_data
from volrot.data.duplicates import duplicate_groups
from volrot.errors import UserError

SMALL = {"size": [12, 12, 12]}


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear_memory_cache()
    yield
    cache.clear_memory_cache()


def _two_classes_with_a_copy(root):
    for label in ("left", "right"):
        for i in range(4):
            write_nifti(root / label / f"{label}{i}.nii.gz", blob_volume(10 * (label == "right") + i, (12, 12, 12), label == "right"))
    shutil.copy(root / "left" / "left0.nii.gz", root / "right" / "copy_of_left0.nii.gz")


def test_two_copies_of_one_volume_in_two_classes_are_refused(tmp_path):
    _two_classes_with_a_copy(tmp_path / "root")
    cfg = DataConfig(name=f"nifti:{tmp_path / 'root'}", preprocess=SMALL, split_fractions=[0.5, 0.25, 0.25])
    with pytest.raises(UserError) as e:
        load_data(cfg)
    msg = str(e.value)
    assert "left0.nii.gz (left," in msg and "copy_of_left0.nii.gz (right," in msg and "identical voxels" in msg
    assert "data.allow_duplicates=true" in msg and "leakage" in msg


def test_allow_duplicates_warns_and_records_the_group(tmp_path):
    from volrot.data.base import DataBundle  # noqa: F401  (bundle.describe() goes into data.json)

    _two_classes_with_a_copy(tmp_path / "root")
    cfg = DataConfig(name=f"nifti:{tmp_path / 'root'}", preprocess=SMALL, split_fractions=[0.5, 0.25, 0.25], allow_duplicates=True)
    with pytest.warns(UserWarning, match="allow_duplicates=true: training anyway"):
        b = load_data(cfg)
    (group,) = b.info["duplicates"]
    assert sorted(m["label"] for m in group["members"]) == ["left", "right"] and group["same"] == ["identical voxels"]
    json.dumps(b.describe(), default=str)  # recorded in the run's data.json


def test_one_dicom_series_in_two_splits_is_found_by_its_uid(tmp_path):
    uid, _ = write_series(tmp_path / "a", n_slices=3, slice_gap=4.0)
    write_series(tmp_path / "b", n_slices=3, slice_gap=6.0, series_uid=uid, shift=300)  # same series, other voxels
    rows = [("a", "x", "train"), ("b", "x", "test")]
    for i, (lab, split) in enumerate([("x", "val"), ("y", "train"), ("y", "val"), ("y", "test")]):
        write_series(tmp_path / f"o{i}", n_slices=3, shift=20 * (i + 1))
        rows.append((f"o{i}", lab, split))
    (tmp_path / "m.csv").write_text("path,label,split\n" + "\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_data(DataConfig(name=f"dicom:{tmp_path / 'm.csv'}", preprocess={"size": 6, "spacing": 8, "intensity": "ct"}))
    msg = str(e.value)
    assert f"[SeriesInstanceUID {uid}]" in msg and "2 volumes in 1 group" in msg
    assert f"{tmp_path / 'a'} (x, train) = {tmp_path / 'b'} (x, test)" in msg


def test_same_series_twice_in_one_split_and_class_is_not_leakage():
    rec = [
        {"path": "a", "label": "x", "split": "train", "voxel_hash": "h1", "series_uid": "1.2"},
        {"path": "b", "label": "x", "split": "train", "voxel_hash": "h2", "series_uid": "1.2"},  # two crops of one scan
        {"path": "c", "label": "y", "split": "test", "voxel_hash": "h3", "series_uid": None},
    ]
    assert duplicate_groups(rec) == []
    rec[1]["split"] = "test"
    assert [m["path"] for m in duplicate_groups(rec)[0]["members"]] == ["a", "b"]
