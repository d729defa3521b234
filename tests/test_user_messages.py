"""Messages that must not mislead (#17 item 6): a single DICOM file, a corrupt checkpoint, NaN
voxels at predict time, several series in one folder (--series-uid), ITK's raw warnings, image
files a folder search passes over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from predict_builders import CLASSES, ct_volume, make_checkpoint, write_dicom_series, write_nifti  # noqa: E402

from volrot.cli import app  # noqa: E402
from volrot.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("msg") / "best.safetensors")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_single_dicom_file_asks_for_the_series_folder(ckpt, tmp_path):
    from volrot.data.preprocess import load_volume

    folder = write_dicom_series(tmp_path / "series", ct_volume(0))
    slice_file = sorted(folder.iterdir())[0]
    with pytest.raises(UserError) as e:
        load_volume(slice_file)
    assert "single DICOM file" in str(e.value) and "series folder" in str(e.value) and "NIfTI" not in str(e.value)
    res = runner.invoke(app, ["predict", str(ckpt), str(slice_file)])
    assert res.exit_code == 2 and "give the series folder" in _one_line(res.output)
    # the same file without a .dcm name is recognised by its DICM magic
    renamed = tmp_path / "slice0001"
    renamed.write_bytes(slice_file.read_bytes())
    with pytest.raises(UserError, match="single DICOM file"):
        load_volume(renamed)


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage that is no header", b"\xff" * 64])
def test_corrupt_safetensors_is_called_a_broken_checkpoint_not_onnx(tmp_path, content):
    from volrot.inference.predict import open_model

    bad = tmp_path / "best.safetensors"
    bad.write_bytes(content)
    with pytest.raises(UserError) as e:
        open_model(bad)
    msg = str(e.value)
    assert "ONNX" not in msg and "checkpoint" in msg and "safetensors" in msg
    res = runner.invoke(app, ["predict", str(bad), str(tmp_path)])
    assert res.exit_code == 2 and "ONNX" not in res.output


def test_corrupt_onnx_named_onnx_is_still_an_onnx_error(tmp_path):
    from volrot.inference.predict import open_model

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError, match="ONNX"):
        open_model(bad)


def test_nan_voxels_at_predict_time_do_not_talk_about_training(ckpt, tmp_path):
    a = ct_volume(1)
    a[2, 3, 4] = np.nan
    nan_file = write_nifti(tmp_path / "nan.nii.gz", a)
    res = runner.invoke(app, ["predict", str(ckpt), str(nan_file)])
    text = _one_line(res.output)
    assert res.exit_code == 2 and "1 NaN and 0 Inf voxels" in text and "training" not in text


def test_several_series_in_one_folder_can_be_picked_with_series_uid(ckpt, tmp_path):
    mix = tmp_path / "mix"
    a = write_dicom_series(mix, ct_volume(2), uid_suffix="71")
    write_dicom_series(tmp_path / "other", ct_volume(3), uid_suffix="72")
    for f in (tmp_path / "other").iterdir():  # second series in the same folder, distinct names
        f.rename(mix / f"b_{f.name}")
    assert a == mix
    res = runner.invoke(app, ["predict", str(ckpt), str(mix)])
    text = _one_line(res.output)
    assert res.exit_code == 2 and "mixes 2 DICOM series" in text and "--series-uid" in text
    uid = "1.2.826.0.1.3680043.2.1125.72"
    assert f"{uid} (14 files)" in text
    ok = runner.invoke(app, ["predict", str(ckpt), str(mix), "--series-uid", uid])
    assert ok.exit_code == 0, ok.output
    from volrot import load_model

    model = load_model(ckpt)
    row = model.predict_many([mix], series_uid=uid).rows[0]
    assert row["error"] is None and row["label"] in CLASSES
    # the chosen series is the one predicted: same result as that series on its own
    write_dicom_series(tmp_path / "alone", ct_volume(3), uid_suffix="72")
    np.testing.assert_allclose(
        list(row["probabilities"].values()), list(model.predict(tmp_path / "alone")["probabilities"].values()), atol=1e-6
    )


def test_no_raw_itk_warning_on_stderr(ckpt, tmp_path):
    """ITK writes its warnings to the process's stderr (fd 2), so run predict in a subprocess."""
    folder = tmp_path / "notdicom"
    folder.mkdir()
    (folder / "scan.dcm").write_bytes(b"not dicom at all" * 20)
    proc = subprocess.run(
        [sys.executable, "-m", "volrot", "predict", str(ckpt), str(folder), "-q"],
        cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "WARNING" not in proc.stderr and "itkGDCM" not in proc.stderr, proc.stderr
    assert "no DICOM series found" in _one_line(proc.stderr)


def test_image_files_of_other_formats_in_a_folder_are_reported(ckpt, tmp_path):
    folder = tmp_path / "study"
    write_nifti(folder / "good.nii.gz", ct_volume(4))
    (folder / "old.hdr").write_bytes(b"\0" * 348)
    (folder / "old.img").write_bytes(b"\0" * 64)
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    out = tmp_path / "preds.json"
    res = runner.invoke(app, ["predict", str(ckpt), str(folder), "--out", str(out)])
    text = _one_line(res.output)
    assert res.exit_code == 0, res.output
    assert "skipped: " in text and "old.hdr" in text and "convert the .hdr/.img pair to .nii.gz" in text
    assert "notes.txt" not in text and "1 of 1 inputs predicted; 2 image files of other formats skipped" in text
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert [Path(s["path"]).name for s in doc["skipped"]] == ["old.hdr", "old.img"]
    only = tmp_path / "only_hdr"
    only.mkdir()
    (only / "a.hdr").write_bytes(b"\0" * 348)
    res = runner.invoke(app, ["predict", str(ckpt), str(only)])
    assert res.exit_code == 2 and "a.hdr" in _one_line(res.output)
