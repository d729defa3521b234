"""`volrot predict` and the Python API: ONNX equals eager on NIfTI and DICOM, a bad input is one
error row, the ONNX path runs without torch, as-is inputs, octahedral TTA, crafted files refused,
and the README clinician script runs."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from predict_builders import CLASSES, SIZE, ct_volume, make_checkpoint, write_dicom_series, write_nifti  # noqa: E402

from volrot import load_model  # noqa: E402
from volrot.cli import app  # noqa: E402
from volrot.errors import UserError  # noqa: E402
from volrot.artifacts.export import export_checkpoint, load_artifact  # noqa: E402
from volrot.inference.predict import OnnxModel, open_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A checkpoint with recorded CT preprocessing (2 mm, 16³), its ONNX export, a NIfTI file and
    a DICOM series (different volumes)."""
    d = tmp_path_factory.mktemp("predict")
    ck = make_checkpoint(d / "best.safetensors")
    export_checkpoint(ck, "onnx", d / "model.onnx", exporter="torchscript", real_data=False)
    nifti = write_nifti(d / "scans" / "a.nii.gz", ct_volume(0))
    dicom = write_dicom_series(d / "scans" / "series1", ct_volume(1), uid_suffix="7")
    return {"ck": ck, "onnx": d / "model.onnx", "nifti": nifti, "dicom": dicom}


def _probs(result):
    return np.array([result["probabilities"][c] for c in CLASSES])


def test_onnx_predictions_equal_eager_on_nifti_and_dicom(exported):
    eager, onnx_model = load_model(exported["ck"]), OnnxModel(exported["onnx"])
    for scan in (exported["nifti"], exported["dicom"]):
        a, b = eager.predict(scan), onnx_model.predict(scan)
        assert a["label"] == b["label"] in CLASSES
        np.testing.assert_allclose(_probs(b), _probs(a), atol=1e-5)
        assert abs(_probs(a).sum() - 1) < 1e-5
        pre = b["preprocessing"]
        assert pre["mode"] == "recorded" and pre["size"] == [SIZE] * 3 and pre["spacing_mm"] == [2.0] * 3
    # the two inputs really differ after preprocessing (not a constant model)
    assert not np.allclose(_probs(eager.predict(exported["nifti"])), _probs(eager.predict(exported["dicom"])))
    # `model(x)` still works on the loaded checkpoint
    assert eager(torch.zeros(1, 1, SIZE, SIZE, SIZE)).shape == (1, len(CLASSES))


def test_folder_with_corrupt_file_gives_complete_output_and_exit_2(exported, tmp_path):
    folder = tmp_path / "study"
    write_nifti(folder / "good1.nii.gz", ct_volume(2))
    write_nifti(folder / "good2.nii", ct_volume(3))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not a gzip stream")
    write_dicom_series(folder / "patient7" / "ct", ct_volume(4), uid_suffix="8")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    for model in (exported["onnx"], exported["ck"]):
        out = tmp_path / f"preds-{model.suffix[1:]}.csv"
        result = CliRunner().invoke(app, ["predict", str(model), str(folder), "--out", str(out), "--batch-size", "2"])
        print(result.output)
        assert result.exit_code == 2, result.output
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        assert len(rows) == 4
        errors = [r for r in rows if r["error"]]
        assert [Path(r["path"]).name for r in errors] == ["broken.nii.gz"]
        assert "broken.nii.gz" in errors[0]["error"]
        good = [r for r in rows if not r["error"]]
        assert all(r["label"] in CLASSES for r in good)
        assert all(abs(sum(float(r[f"p_{c}"]) for c in CLASSES) - 1) < 1e-4 for r in good)
        assert all(r["size"] == f"{SIZE} {SIZE} {SIZE}" and r["spacing_mm"] == "2 2 2" for r in good)
    # same inputs as JSON: complete, with the error row and the preprocessing summary
    out = tmp_path / "preds.json"
    result = CliRunner().invoke(app, ["predict", str(exported["onnx"]), str(folder), "--out", str(out)])
    assert result.exit_code == 2
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert len(doc["predictions"]) == 4 and doc["errors"] == 1
    assert doc["preprocessing"]["mode"] == "recorded"


def test_onnx_path_runs_without_torch(exported):
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from volrot.inference.predict import OnnxModel\n"
        f"m = OnnxModel({str(exported['onnx'])!r})\n"
        f"scans = ({str(exported['nifti'])!r}, {str(exported['dicom'])!r})\n"
        "print(json.dumps([m.predict(p) for p in scans]))\n"
        "assert sys.modules['torch'] is None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    eager = load_model(exported["ck"])
    for res, scan in zip(results, (exported["nifti"], exported["dicom"])):
        np.testing.assert_allclose(_probs(res), _probs(eager.predict(scan)), atol=1e-5)


def test_shapes_checkpoint_takes_files_as_is(tmp_path):
    ck = make_checkpoint(tmp_path / "ck.safetensors", preprocessing={"source": "generated", "size": SIZE, "intensity": "none", "scale": 1.0, "offset": 0.0})
    vol = np.random.default_rng(0).normal(size=(SIZE,) * 3).astype(np.float32)
    scan = write_nifti(tmp_path / "cube.nii.gz", vol, spacing=(1.0, 1.0, 1.0))
    model = load_model(ck)
    res = model.predict(scan)
    assert res["preprocessing"]["mode"] == "as-is" and res["preprocessing"]["size"] == [SIZE] * 3
    with torch.no_grad():
        ref = torch.softmax(model.model(torch.from_numpy(vol)[None, None]), -1)[0].numpy()
    np.testing.assert_allclose(_probs(res), ref, atol=1e-6)
    wrong = write_nifti(tmp_path / "big.nii.gz", np.zeros((20, 20, 20), np.float32))
    with pytest.raises(UserError, match=r"20×20×20 voxels but this model takes 16×16×16 as-is"):
        model.predict(wrong)


def test_octahedral_tta_is_rotation_invariant(tmp_path):
    from volrot.so3.groups import octahedral, rotate_exact

    x = np.random.default_rng(1).normal(size=(1, 5, 5, 5)).astype(np.float32)
    for g in octahedral():  # numpy and torch through the same op words
        np.testing.assert_array_equal(rotate_exact(x, g), rotate_exact(torch.from_numpy(x), g).numpy())
    ck = make_checkpoint(tmp_path / "ck.safetensors", preprocessing={"source": "generated", "size": SIZE, "scale": 1.0, "offset": 0.0})
    vol = np.random.default_rng(2).normal(size=(SIZE,) * 3).astype(np.float32)
    turned = rotate_exact(vol[None], octahedral()[7])[0]
    a = write_nifti(tmp_path / "a.nii.gz", vol, spacing=(1, 1, 1))
    b = write_nifti(tmp_path / "b.nii.gz", turned, spacing=(1, 1, 1))
    model = load_model(ck)
    pa, pb = model.predict(a, tta="octahedral"), model.predict(b, tta="octahedral")
    np.testing.assert_allclose(_probs(pa), _probs(pb), atol=1e-6)
    assert pa["preprocessing"]["tta"] == "octahedral"
    plain_a, plain_b = _probs(model.predict(a)), _probs(model.predict(b))
    assert np.abs(plain_a - plain_b).max() > 1e-4, "the plain model should not be invariant"


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickles_are_refused_without_running(tmp_path, exported):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _Exploit(marker)})
    for name in ("best.safetensors", "model.onnx", "model.pt", "model.pt2"):
        (tmp_path / name).write_bytes(payload)
    with pytest.raises(UserError, match="not a volrot checkpoint"):
        load_model(tmp_path / "best.safetensors")
    for name in ("best.safetensors", "model.onnx", "model.pt"):
        with pytest.raises(UserError, match="pickle"):
            open_model(tmp_path / name)
    with pytest.raises(UserError, match="pickle"):
        OnnxModel(tmp_path / "model.onnx")
    for name in ("model.pt", "model.pt2"):
        with pytest.raises(UserError, match="pickle"):
            load_artifact(tmp_path / name)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "model.onnx"), str(exported["nifti"])])
    assert result.exit_code == 2 and "pickle" in result.output

    # A TorchScript-shaped zip with valid volrot metadata whose data.pkl runs os.system:
    # refused by the static scan before torch.jit.load sees it.
    meta = json.dumps({"format": "volrot-export", "export": {"format": "torchscript"}})
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as z:
        z.writestr("evil/extra/volrot.json", meta)
        z.writestr("evil/data.pkl", payload)
        z.writestr("evil/version", "3")
    with pytest.raises(UserError, match="imports 'posix system'|imports 'nt system'"):
        load_artifact(tmp_path / "evil.pt")
    # a pt2-shaped zip whose weights are stored as pickles (torch.export.load unpickles those)
    config = {"config": {"fc.weight": {"path_name": "weight_0", "use_pickle": True}}}
    with zipfile.ZipFile(tmp_path / "evil.pt2", "w") as z:
        z.writestr("m/extra/volrot.json", json.dumps({"format": "volrot-export", "export": {"format": "pt2"}}))
        z.writestr("m/data/weights/model_weights_config.json", json.dumps(config))
        z.writestr("m/data/weights/weight_0", payload)
    with pytest.raises(UserError, match="stores tensors as pickles"):
        load_artifact(tmp_path / "evil.pt2")
    # ONNX bytes without volrot metadata, and garbage named .onnx
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(UserError, match="not a readable ONNX model|not a volrot ONNX export"):
        OnnxModel(tmp_path / "garbage.onnx")
    assert not marker.exists()


def test_readme_clinician_script_runs(exported):
    script = ROOT / "examples" / "clinician.py"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert script.read_text(encoding="utf-8").strip() in readme, "README.md must show examples/clinician.py verbatim"
    scans = [str(exported["nifti"]), str(exported["dicom"])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with_torch = subprocess.run(
        [sys.executable, str(script), str(exported["ck"]), *scans], cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120
    )
    assert with_torch.returncode == 0, with_torch.stderr
    no_torch = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')",
            str(script),
            str(exported["onnx"]),
            *scans,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True, encoding="utf-8",
        timeout=120,
    )
    assert no_torch.returncode == 0, no_torch.stderr
    eager = load_model(exported["ck"])
    for out in (with_torch.stdout, no_torch.stdout):
        lines = out.strip().splitlines()
        assert len(lines) == 2
        for line, scan in zip(lines, scans):
            res = eager.predict(scan)
            assert line == f"{scan}: {res['label']} ({res['probabilities'][res['label']]:.1%})"
