"""Forged and broken model files, one test per class of failure, through every entry point.

Each refusal must be: exit code 2 from the CLI (a `UserError` from the library), one line of
output that names the problem, no traceback, and nothing written. The model-size refusal must
also stay within a memory ceiling (measured peak RSS of the refusing process).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from predict_builders import CLASSES, SIZE, ct_volume, make_checkpoint, write_nifti
from volrot import load_model
from volrot.artifacts.checkpoint import read_tensors, save_tensors
from volrot.cli import app
from volrot.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

#: Peak RSS a process that refuses an oversized model may reach (python + torch + volrot import
#: is about 0.4 GiB here); documented in docs/security.md.
REFUSAL_RSS_CEILING_MB = 1024


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_refused(res, fragment: str) -> None:
    out = res.output.strip()
    assert res.exit_code == 2, out
    assert "Traceback" not in out
    assert len(out.splitlines()) == 1, out
    assert out.startswith("error:"), out
    assert fragment in out, out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A valid tiny checkpoint (tensors and raw card) and a scan it accepts."""
    d = tmp_path_factory.mktemp("base")
    ck = make_checkpoint(d / "ck.safetensors", "resnet3d")
    tensors, meta = read_tensors(ck)
    return {"tensors": tensors, "meta": meta, "scan": write_nifti(d / "scan.nii.gz", ct_volume(1))}


def _v1(meta: dict) -> dict:
    """The same card as volrot 0.1 wrote it (schema 1, before the model card)."""
    v1 = {
        "format": "volrot-checkpoint",
        "format_version": 1,
        "volrot_version": "0.1.0",
        "torch_version": meta["versions"]["torch"],
        "arch": meta["arch"],
        "model_config": {"num_classes": len(meta["class_names"]), "in_channels": meta["input"]["shape"][0], **meta["model_options"]},
        "class_names": meta["class_names"],
        "input": meta["input"],
        "data": {**meta["data"], "class_names": meta["class_names"], "preprocessing": meta["preprocessing"]},
        "preprocessing": meta["preprocessing"],
        "recipe": meta["recipe"],
        "metrics": meta["metrics"],
        "epoch": meta["epoch"],
    }
    return v1


def _forge(case: str, tensors: dict, meta: dict):
    """(tensors, metadata, expected message fragment) of one forged checkpoint."""
    tensors, meta = dict(tensors), copy.deepcopy(meta)
    if case == "metadata is a JSON list":
        return tensors, [meta], "must be a JSON object, got a JSON list"
    if case == "no model_options":
        del meta["model_options"]
        return tensors, meta, "has no 'model_options'"
    if case == "schema 1 without model_config":
        v1 = _v1(meta)
        del v1["model_config"]
        return tensors, v1, "has no 'model_config'"
    if case == "shape mismatch":
        meta["model_options"]["width"] = 4  # the weights are width 2
        return tensors, meta, "metadata does not match its weights"
    if case == "one class name for three logits":
        meta["class_names"] = ["benign"]
        return tensors, meta, "1 class name(s)"
    if case == "schema 1 class names vs num_classes":
        v1 = _v1(meta)
        v1["class_names"] = ["benign"]
        return tensors, v1, "names 1 class(es) but model_config.num_classes is 3"
    if case == "NaN weight":
        name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        t = tensors[name].clone()
        t.view(-1)[0] = float("nan")
        tensors[name] = t
        return tensors, meta, "holds NaN"
    if case == "huge input shape":
        meta["input"]["shape"] = [1, 4096, 4096, 4096]
        meta["preprocessing"]["size"] = [4096, 4096, 4096]
        return tensors, meta, "refusing before allocating it"
    if case == "huge model width":
        meta["model_options"]["width"] = 200000
        return tensors, meta, "refusing to build it"
    raise AssertionError(case)


CASES = [
    "metadata is a JSON list",
    "no model_options",
    "schema 1 without model_config",
    "shape mismatch",
    "one class name for three logits",
    "schema 1 class names vs num_classes",
    "NaN weight",
    "huge input shape",
    "huge model width",
]


def _entry_args(entry: str, ck: Path, scan: Path, out: Path) -> list[str]:
    return {
        "eval-rotated": ["eval-rotated", str(ck), "--quiet", "--device", "cpu"],
        "export": ["export", str(ck), "--format", "onnx", "--out", str(out / "m.onnx")],
        "predict": ["predict", str(ck), str(scan), "--out", str(out / "p.csv"), "--quiet", "--device", "cpu"],
        "inspect-activation": ["inspect-activation", str(ck), "--device", "cpu"],
    }[entry]


@pytest.mark.parametrize("case", CASES)
def test_forged_checkpoint_is_refused_by_every_entry_point(tmp_path, base, case):
    tensors, meta, fragment = _forge(case, base["tensors"], base["meta"])
    ck_dir = tmp_path / "run"
    ck = ck_dir / "best.safetensors"
    save_tensors(ck, tensors, meta)
    out = tmp_path / "out"
    out.mkdir()
    before = _files(tmp_path)

    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_model(ck)
    for entry in ("eval-rotated", "export", "predict", "inspect-activation"):
        res = runner.invoke(app, _entry_args(entry, ck, base["scan"], out))
        _assert_refused(res, fragment)
        assert _files(tmp_path) == before, f"{entry} wrote {_files(tmp_path) - before}"


def _peak_rss_mb(args: list, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m volrot <args>` in a wrapper whose only child is that process; return its
    result and its peak RSS (getrusage(RUSAGE_CHILDREN).ru_maxrss, KiB on Linux)."""
    wrapper = (
        "import resource, subprocess, sys, json\n"
        "p = subprocess.run([sys.executable, '-m', 'volrot', *sys.argv[1:]], capture_output=True)\n"
        "sys.stdout.write(json.dumps({'rc': p.returncode, 'out': p.stdout.decode('utf-8', 'replace'), "
        "'err': p.stderr.decode('utf-8', 'replace'), 'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", wrapper, *map(str, args)], cwd=cwd, capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    res = json.loads(proc.stdout)
    return res, res["rss_kib"] / 1024


def test_oversized_model_is_refused_before_allocating(tmp_path, base):
    """Item 4: width 200000 from checkpoint metadata, width 100000 from --set; both refused
    with one line before anything large is allocated (peak RSS measured)."""
    tensors, meta, _ = _forge("huge model width", base["tensors"], base["meta"])
    ck = tmp_path / "run" / "best.safetensors"
    save_tensors(ck, tensors, meta)
    out = tmp_path / "out"
    before = _files(tmp_path)

    res, rss = _peak_rss_mb(["export", ck, "--format", "onnx", "--out", out / "m.onnx"], ROOT)
    print(f"export of a width-200000 checkpoint: exit {res['rc']}, peak RSS {rss:.0f} MB: {res['err'].strip()}")
    assert res["rc"] == 2 and "refusing to build it" in res["err"] and "Traceback" not in res["err"] + res["out"]
    assert len(res["err"].strip().splitlines()) == 1
    assert rss < REFUSAL_RSS_CEILING_MB

    res, rss = _peak_rss_mb(
        ["train", "--set", "model.width=100000", "--set", "data.size=16", "--set", f"train.out={out}", "--set", "train.device=cpu"], ROOT
    )
    print(f"train --set model.width=100000: exit {res['rc']}, peak RSS {rss:.0f} MB: {res['err'].strip()}")
    assert res["rc"] == 2 and "refusing to build it" in res["err"] and "Traceback" not in res["err"] + res["out"]
    assert len(res["err"].strip().splitlines()) == 1
    assert rss < REFUSAL_RSS_CEILING_MB
    assert _files(tmp_path) == before


def test_model_size_estimate_matches_the_built_model():
    """The dry-run estimate is exact for every arch (tiny and default options)."""
    from predict_builders import tiny_options

    from volrot.models import create_model, list_models
    from volrot.models.registry import estimate_model_elements, model_elements

    for arch in list_models():
        for opts in (tiny_options(arch), {}):
            est = estimate_model_elements(arch, num_classes=3, **opts)
            assert est == model_elements(create_model(arch, num_classes=3, **opts)), (arch, opts)


def test_create_model_weights_unchanged_by_the_size_check():
    """The dry run restores the RNG: a seeded create_model gives the weights a direct build gives."""
    from volrot.models import create_model
    from volrot.models.registry import get_entry

    entry = get_entry("resnet3d")  # default width: the dry run redirects tensors to meta, so it rebuilds
    torch.manual_seed(5)
    a = create_model("resnet3d", num_classes=3)
    torch.manual_seed(5)
    b = entry.builder(num_classes=3, in_channels=1, **entry.defaults)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


# --- ONNX files -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_base(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from volrot.artifacts.export import export_checkpoint

    d = tmp_path_factory.mktemp("onnx")
    ck = make_checkpoint(d / "ck.safetensors", "resnet3d")
    export_checkpoint(ck, "onnx", d / "m.onnx", real_data=False, exporter="torchscript")
    return {"proto": onnx.load(str(d / "m.onnx")), "scan": write_nifti(d / "scan.nii.gz", ct_volume(1))}


def _set_card(proto, change) -> None:
    entry = next(p for p in proto.metadata_props if p.key == "volrot")
    meta = json.loads(entry.value)
    meta = change(meta)
    entry.value = json.dumps(meta)


def _forge_onnx(case: str, proto, folder: Path) -> tuple[Path, str]:
    import onnx
    from onnx import numpy_helper

    proto = copy.deepcopy(proto)
    path = folder / "model.onnx"
    if case == "no class_names":
        _set_card(proto, lambda m: {k: v for k, v in m.items() if k != "class_names"})
        fragment = "has no 'class_names'"
    elif case == "one class name for three logits":
        _set_card(proto, lambda m: {**m, "class_names": ["benign"]})
        fragment = "returns 3 logits but its metadata names 1 class(es)"
    elif case == "metadata is a JSON list":
        _set_card(proto, lambda m: [m])
        fragment = "must be a JSON object, got a JSON list"
    elif case == "NaN weight":
        init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        w = numpy_helper.to_array(init).copy()
        w.reshape(-1)[0] = np.nan
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        fragment = "holds NaN or infinity"
    elif case == "external data":
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
        return path, "stored as external data"
    elif case == "huge input shape":
        _set_card(proto, lambda m: {**m, "input": {"shape": [1, 4096, 4096, 4096], "dtype": "float32"}})
        fragment = "refusing before allocating it"
    else:
        raise AssertionError(case)
    onnx.save_model(proto, str(path))
    return path, fragment


@pytest.mark.parametrize(
    "case", ["no class_names", "one class name for three logits", "metadata is a JSON list", "NaN weight", "external data", "huge input shape"]
)
def test_forged_onnx_is_refused_by_predict(tmp_path, onnx_base, case):
    from volrot.inference.predict import OnnxModel

    folder = tmp_path / "model"
    folder.mkdir()
    path, fragment = _forge_onnx(case, onnx_base["proto"], folder)
    before = _files(tmp_path)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        OnnxModel(path)
    res = runner.invoke(app, ["predict", str(path), str(onnx_base["scan"]), "--out", str(tmp_path / "p.csv"), "--quiet", "--device", "cpu"])
    _assert_refused(res, fragment)
    assert _files(tmp_path) == before


def test_onnx_external_data_is_never_read(tmp_path, onnx_base, monkeypatch):
    """The refusal happens before onnxruntime sees the file: the named data file is not opened."""
    import builtins

    path, _ = _forge_onnx("external data", onnx_base["proto"], tmp_path)
    opened = []
    real_open = builtins.open

    def spy(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", spy)
    from volrot.inference.predict import OnnxModel

    with pytest.raises(UserError, match="external data"):
        OnnxModel(path)
    assert not any(f.endswith("weights.bin") for f in opened)


# --- export verification --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_export_verification_fails_on_nan_or_inf_artifact(tmp_path, monkeypatch, bad):
    """A NaN compares false with every tolerance: the artifact must still be refused."""
    pytest.importorskip("onnxruntime")
    import volrot.artifacts.export as export_mod

    ck = make_checkpoint(tmp_path / "ck.safetensors")
    real_runner = export_mod._runner_for

    def broken_runner(fmt, path):
        run = real_runner(fmt, path)

        def call(x):
            y = run(x).copy()
            y[0, 0] = bad
            return y

        return call

    monkeypatch.setattr(export_mod, "_runner_for", broken_runner)
    out = tmp_path / "out" / "m.pt"
    with pytest.raises(UserError, match="NaN or infinity"):
        export_mod.export_checkpoint(ck, "torchscript", out, real_data=False)
    assert not out.parent.exists() or not list(out.parent.iterdir())


# --- file names -----------------------------------------------------------------------------------


def test_checkpoint_with_non_utf8_file_name_loads_and_predicts(tmp_path, base):
    raw = os.fsencode(tmp_path) + b"/mod\xe8le-\xff.safetensors"
    name = os.fsdecode(raw)
    save_tensors(Path(name), base["tensors"], base["meta"])
    model = load_model(name)
    assert model.card.class_names == tuple(CLASSES)
    row = model.predict(base["scan"])
    assert row["label"] in CLASSES
    # through the CLI, with the name as raw bytes on the command line
    out = tmp_path / "p.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable.encode(), b"-m", b"volrot", b"predict", raw, os.fsencode(base["scan"]), b"--out", os.fsencode(out), b"--quiet", b"--device", b"cpu"],
        cwd=ROOT, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert json.loads(out.read_text(encoding="utf-8"))["predictions"][0]["label"] == row["label"]


def test_nan_logits_from_finite_weights_are_refused(tmp_path, base, monkeypatch):
    """Outputs are checked too: a model returning NaN gives an error, never a NaN probability."""
    model = load_model(make_checkpoint(tmp_path / "ck.safetensors"))
    monkeypatch.setattr(model, "model", lambda x: torch.full((x.shape[0], len(CLASSES)), float("nan")))
    with pytest.raises(UserError, match="NaN logits"):
        model.predict(base["scan"])
    x = np.zeros((1, 1, SIZE, SIZE, SIZE), np.float32)
    with pytest.raises(UserError, match="NaN logits"):
        model(x)
