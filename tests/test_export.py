"""`volrot export`: every registered arch exports and predicts like the eager model; metadata;
verification failures write nothing; exporter fallback; TorchScript and pt2 round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from predict_builders import CLASSES, SIZE, ct_volume, make_checkpoint, write_nifti  # noqa: E402

from volrot import load_model  # noqa: E402
from volrot.cli import app  # noqa: E402
from volrot.errors import UserError  # noqa: E402
from volrot.artifacts.export import export_checkpoint, load_artifact  # noqa: E402
from volrot.models import list_models  # noqa: E402
from volrot.inference.predict import OnnxModel  # noqa: E402


@pytest.mark.parametrize("arch", list_models())
def test_every_arch_exports_to_onnx_and_predicts_like_eager(tmp_path, arch):
    ck = make_checkpoint(tmp_path / f"{arch}.safetensors", arch)
    scan = write_nifti(tmp_path / "scan.nii.gz", ct_volume(1))
    report = export_checkpoint(ck, "onnx", tmp_path / f"{arch}.onnx", samples=[scan], real_data=False)
    print(f"{arch}: onnx via {report.exporter}, max|Δ| {report.max_abs:.3g} ({report.max_rel:.3g} relative)")
    assert report.max_rel <= 1e-4
    assert {c.batch for c in report.checks} >= {1, 3}, "dynamic batch axis not exercised"
    assert any(c.name.startswith("real") for c in report.checks)

    onnx_model = OnnxModel(tmp_path / f"{arch}.onnx")
    eager = load_model(ck).predict(scan)
    exported = onnx_model.predict(scan)
    assert exported["label"] == eager["label"]
    np.testing.assert_allclose(
        [exported["probabilities"][c] for c in CLASSES], [eager["probabilities"][c] for c in CLASSES], atol=1e-5
    )
    x = np.random.default_rng(0).normal(size=(2, 1, SIZE, SIZE, SIZE)).astype(np.float32)
    ref = load_model(ck)(x)
    np.testing.assert_allclose(onnx_model(x), ref, rtol=1e-4, atol=1e-5)


def test_onnx_metadata_is_complete_and_batch_is_dynamic(tmp_path):
    import onnx

    ck = make_checkpoint(tmp_path / "ck.safetensors")
    export_checkpoint(ck, "onnx", tmp_path / "m.onnx", real_data=False)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props["volrot"])
    ck_meta = load_model(ck).meta
    for key in ("arch", "model_options", "class_names", "input", "preprocessing", "data", "recipe", "metrics", "versions"):
        assert meta[key] == ck_meta[key], key
    assert meta["format"] == "volrot-export"
    assert meta["export"]["format"] == "onnx" and meta["export"]["exporter"] in ("torchscript", "dynamo")
    assert meta["export"]["opset"] >= 17
    assert meta["export"]["checkpoint"] == "ck.safetensors" and len(meta["export"]["checkpoint_sha256"]) == 64
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value, "batch axis is not symbolic"
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [1, SIZE, SIZE, SIZE]


def test_verification_failure_writes_nothing(tmp_path, monkeypatch):
    import volrot.artifacts.export as export_mod

    ck = make_checkpoint(tmp_path / "ck.safetensors")
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    out.write_bytes(b"previous artifact")
    real_runner = export_mod._runner_for

    def drifting_runner(fmt, path):
        run = real_runner(fmt, path)
        return lambda x: run(x) + np.float32(0.01)  # a wrong artifact

    monkeypatch.setattr(export_mod, "_runner_for", drifting_runner)
    with pytest.raises(UserError, match="differs from the eager model") as info:
        export_checkpoint(ck, "onnx", out, exporter="torchscript", real_data=False)
    assert "nothing written" in str(info.value)
    assert out.read_bytes() == b"previous artifact"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"], "temporary file left behind"


def test_onnx_exporter_falls_back_to_dynamo(tmp_path, monkeypatch):
    import volrot.artifacts.export as export_mod

    real_write = export_mod._write_onnx

    def legacy_broken(model, example, tmp, exporter, meta):
        if exporter == "torchscript":
            raise RuntimeError("Unsupported: ONNX export of convolution for kernel of unknown shape")
        real_write(model, example, tmp, exporter, meta)

    monkeypatch.setattr(export_mod, "_write_onnx", legacy_broken)
    ck = make_checkpoint(tmp_path / "ck.safetensors")
    report = export_checkpoint(ck, "onnx", tmp_path / "m.onnx", real_data=False)
    assert report.exporter == "dynamo"
    assert len(report.attempts) == 1 and "kernel of unknown shape" in report.attempts[0]
    assert OnnxModel(tmp_path / "m.onnx").meta["export"]["opset"] == 18


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torchscript_and_pt2_round_trip(tmp_path, fmt):
    ck = make_checkpoint(tmp_path / "ck.safetensors")
    out = tmp_path / f"m.{fmt}"
    report = export_checkpoint(ck, fmt, out, real_data=False)
    assert report.max_rel <= 1e-4
    artifact = load_artifact(out)
    meta = artifact.meta
    assert meta["class_names"] == CLASSES and meta["export"]["format"] == fmt
    model = load_model(ck).model
    for b in (1, 4):
        x = torch.randn(b, 1, SIZE, SIZE, SIZE)
        with torch.no_grad():
            torch.testing.assert_close(artifact(x), model(x), rtol=1e-5, atol=1e-6)


def test_cli_export_checks_on_real_training_data(tmp_path, tiny_recipe):
    ck = make_checkpoint(
        tmp_path / "ck.safetensors", preprocessing={"source": "generated", "size": SIZE, "scale": 1.0, "offset": 0.0}, recipe=tiny_recipe().to_dict()
    )
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(ck), "--format", "onnx", "--out", str(out)])
    print(result.output)
    assert result.exit_code == 0, result.output
    assert "real: shapes test (4)" in result.output
    assert "max |Δ|" in result.output and out.is_file()
    bad = CliRunner().invoke(app, ["export", str(ck), "--format", "keras", "--out", str(tmp_path / "m.h5")])
    assert bad.exit_code == 2 and "--format must be one of" in bad.output
    assert not (tmp_path / "m.h5").exists()
