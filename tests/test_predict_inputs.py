"""A folder given to `predict` in which nothing is found is an error row, never dropped
(issue #13, item 18)."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from tests.data_builders import blob_volume
from tests.predict_builders import SIZE, make_checkpoint, write_nifti
from volrot import load_model
from volrot.cli import app
from volrot.errors import UserError
from volrot.inference.inputs import find_inputs


@pytest.fixture
def setup(tmp_path):
    ck = make_checkpoint(tmp_path / "ck.safetensors", preprocessing={"source": "generated", "size": SIZE, "intensity": "none", "scale": 1.0, "offset": 0.0})
    good = write_nifti(tmp_path / "scans" / "good.nii.gz", blob_volume(0, shape=(SIZE,) * 3))
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "sub" / "readme.txt").write_text("no images here\n", encoding="utf-8")
    return ck, good, empty, notes


def test_empty_folders_become_error_rows_and_exit_2(tmp_path, setup):
    ck, good, empty, notes = setup
    out = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", str(ck), str(empty), str(good.parent), str(notes), "--device", "cpu", "--out", str(out), "-q"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert "1 of 3 inputs predicted" in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no NIfTI file or DICOM series in {empty}", f"error: no NIfTI file or DICOM series in {notes}"]
    rows = {r["path"]: r for r in csv.DictReader(out.read_text(encoding="utf-8").splitlines())}
    assert rows[str(empty)]["error"] == f"no NIfTI file or DICOM series in {empty}" and rows[str(empty)]["label"] == ""
    assert rows[str(good)]["error"] == "" and rows[str(good)]["label"]


def test_library_keeps_the_folder_and_refuses_it(setup):
    ck, good, empty, notes = setup
    assert find_inputs([empty, good.parent]) == [empty, good]
    with pytest.raises(UserError, match="no NIfTI file or DICOM series in"):
        load_model(ck).predict(empty)
