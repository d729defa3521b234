"""DICOM series read with SimpleITK: slice order, LPS -> RAS, series selection, messy folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.data_builders import CT_ORIGIN, write_nifti, write_series
from volrot.data.dicom import read_dicom_series
from volrot.data.preprocess import PreprocessSpec, load_volume, preprocess_file
from volrot.errors import UserError


def test_shuffled_series_comes_back_in_slice_order(tmp_path):
    uid, expected = write_series(tmp_path / "s", n_slices=8, seed=3)
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert len(files) == 8
    img = load_volume(tmp_path / "s")
    assert img.array.shape == (128, 128, 8)
    # stored pixel [0, 0] of slice k is 1000 + k, i.e. HU = 1000 + k - 1024
    np.testing.assert_array_equal(img.array[0, 0, :], np.arange(8) - 24.0)
    np.testing.assert_array_equal(img.array, expected)
    # LPS origin (-158.1, -179.0, -75.7) -> RAS (158.1, 179.0, -75.7); i runs to the left (-x in RAS)
    np.testing.assert_allclose(img.affine[:3, 3], [-CT_ORIGIN[0], -CT_ORIGIN[1], CT_ORIGIN[2]], atol=1e-4)
    np.testing.assert_allclose(np.diag(img.affine)[:3], [-0.661468, -0.661468, 5.0], atol=1e-5)


def test_dicom_series_and_its_nifti_twin_give_the_same_tensor(tmp_path):
    _, expected = write_series(tmp_path / "s", n_slices=8, seed=1)
    ras = np.diag([-0.661468, -0.661468, 5.0, 1.0])
    ras[:3, 3] = [-CT_ORIGIN[0], -CT_ORIGIN[1], CT_ORIGIN[2]]
    nii = write_nifti(tmp_path / "twin.nii.gz", expected, ras)
    spec = PreprocessSpec(size=(24, 24, 20), spacing=(2.0, 2.0, 2.0), intensity="ct")
    a = preprocess_file(tmp_path / "s", spec)
    b = preprocess_file(nii, spec)
    assert a.shape == (1, 24, 24, 20) and a.std() > 0.01
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_several_series_in_one_folder_need_a_series_uid(tmp_path):
    uid_a, exp_a = write_series(tmp_path / "mix", n_slices=4, seed=0)
    uid_b, _ = write_series(tmp_path / "mix", n_slices=5, seed=1, slice_gap=3.0)
    with pytest.raises(UserError) as e:
        load_volume(tmp_path / "mix")
    msg = str(e.value)
    assert "mixes 2 DICOM series" in msg and uid_a in msg and uid_b in msg and "series_uid" in msg
    a = read_dicom_series(tmp_path / "mix", series_uid=uid_a)
    np.testing.assert_array_equal(a.array, exp_a)
    assert read_dicom_series(tmp_path / "mix", series_uid=uid_b).array.shape == (128, 128, 5)
    with pytest.raises(UserError, match="no series with SeriesInstanceUID 1.2.3"):
        read_dicom_series(tmp_path / "mix", series_uid="1.2.3")


def test_hidden_files_are_ignored_but_other_files_are_not(tmp_path):
    write_series(tmp_path / "s", n_slices=4)
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\0\1junk")
    assert load_volume(tmp_path / "s").array.shape == (128, 128, 4)
    (tmp_path / "s" / "notes.txt").write_text("scanned on Tuesday", encoding="utf-8")
    with pytest.raises(UserError, match=r"notes\.txt: not a DICOM file in series folder"):
        load_volume(tmp_path / "s")


def test_truncated_slice_is_named(tmp_path):
    write_series(tmp_path / "s", n_slices=4)
    victim = sorted((tmp_path / "s").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:5000])
    with pytest.raises(UserError) as e:
        load_volume(tmp_path / "s")
    assert victim.name in str(e.value) and "truncated or corrupt DICOM" in str(e.value)


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "folder is empty; expected the DICOM slice files of one series"),
        ("single_slice", "2D image (shape 128×128×1)"),
        ("duplicate_position", "two or more slices share one position"),
        ("missing_slice", "uneven slice spacing (5 to 10 mm)"),
        ("too_big", "header claims 128×128×4 = 6.55e+04 voxels, above the limit of 1e+04"),
        ("no_dicom", "no DICOM series found (2 files"),
        ("a_file", "is a file; DICOM entries must be series folders"),
    ],
)
def test_bad_series_folders(tmp_path, case, message):
    s = tmp_path / "s"
    max_voxels = 2**28
    if case == "empty":
        s.mkdir()
    elif case == "single_slice":
        write_series(s, n_slices=1)
    elif case == "duplicate_position":
        write_series(s, positions=[0.0, 5.0, 5.0, 10.0])
    elif case == "missing_slice":
        write_series(s, positions=[0.0, 5.0, 15.0, 20.0])
    elif case == "too_big":
        write_series(s, n_slices=4)
        max_voxels = 10_000
    elif case == "no_dicom":
        s.mkdir()
        (s / "a.txt").write_text("a", encoding="utf-8")
        (s / "b.bin").write_bytes(b"\0" * 300)
    elif case == "a_file":
        write_series(tmp_path / "x", n_slices=2)
        s = next((tmp_path / "x").iterdir())
    with pytest.raises(UserError) as e:
        read_dicom_series(s, max_voxels=max_voxels)
    assert message in str(e.value) and str(s) in str(e.value)


def test_absurd_size_is_refused_before_pixel_data_is_read(tmp_path, monkeypatch):
    import SimpleITK as sitk

    write_series(tmp_path / "s", n_slices=4)

    def boom(self):
        raise AssertionError("pixel data read")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", boom)
    with pytest.raises(UserError, match="above the limit"):
        read_dicom_series(tmp_path / "s", max_voxels=1000)
    shutil.rmtree(tmp_path / "s")
