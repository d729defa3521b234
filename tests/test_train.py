import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from volrot import load_model
from volrot.artifacts.checkpoint import read_tensors
from volrot.cli import app
from volrot.config import recipe_from_dict
from volrot.data import load_data
from volrot.engine.evaluate import evaluate
from volrot.engine.train import lr_at, train

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_cli_train_smoke_writes_run_folder(tmp_path):
    out = tmp_path / "runs"
    res = runner.invoke(
        app,
        ["train", "--epochs", "1", "--size", "16", "--set", "data.max_samples=16", "--set", "model.width=2",
         "--batch-size", "8", "--device", "cpu", "--out", str(out), "--name", "smoke", "-q"],
    )
    assert res.exit_code == 0, res.output
    run = out / "smoke"
    for f in ("recipe.yaml", "data.json", "metrics.jsonl", "best.safetensors", "last.safetensors", "metrics.json"):
        assert (run / f).is_file(), f
    assert "ACC" in res.output and "AUC" in res.output and "run folder" in res.output
    recipe = (run / "recipe.yaml").read_text(encoding="utf-8")
    assert "width: 2" in recipe and "name: shapes" in recipe
    meta = load_model(run / "best.safetensors").meta
    assert set(meta["metrics"]) == {"val", "test"}
    assert meta["class_names"][:2] == ["chiral-left", "chiral-right"]
    assert meta["input"]["shape"] == [1, 16, 16, 16]


def test_resume_reproduces_uninterrupted_run(tiny_recipe, tmp_path):
    full = train(tiny_recipe(train={"epochs": 3, "name": "full", "augment": "octahedral"}), progress=False)
    part = train(tiny_recipe(train={"epochs": 3, "name": "part", "augment": "octahedral"}), progress=False, stop_after_epoch=1)
    assert not part.completed and part.metrics["epoch"] == 1
    assert len((part.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 1
    resumed = train(None, resume=part.run_dir, progress=False)
    a, _ = read_tensors(full.run_dir / "last.safetensors")
    b, _ = read_tensors(resumed.run_dir / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed.metrics["test"] == full.metrics["test"]
    la = [json.loads(l) for l in (full.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    lb = [json.loads(l) for l in (resumed.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["val_auc"] for r in la] == [r["val_auc"] for r in lb]


def test_lr_schedule_matches_medmnist_multisteplr():
    r = recipe_from_dict({"optim": {"lr": 1.0}, "train": {"epochs": 100}})
    assert [lr_at(r, e) for e in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    one = recipe_from_dict({"optim": {"lr": 1.0}, "train": {"epochs": 1}})
    assert lr_at(one, 0) == 1.0


def test_bad_recipe_key_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  lrr: 0.2\n", encoding="utf-8")
    res = runner.invoke(app, ["train", "--recipe", str(bad), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and "optim.lrr" in lines[0], res.output
    assert not (tmp_path / "runs").exists()

    res = runner.invoke(app, ["train", "--set", "model.widht=8", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "model.widht" in res.output
    assert len([l for l in res.output.splitlines() if l.strip()]) == 1
    res = runner.invoke(app, ["train", "--arch", "nonsense", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "unknown arch 'nonsense'" in res.output
    assert not (tmp_path / "runs").exists()


def test_set_overrides_and_pair_recipe(tmp_path):
    from volrot.config import build_recipe

    r = build_recipe(None, {"epochs": 3}, ["optim.lr=0.01", "model.width=8"])
    assert r.optim.lr == 0.01 and r.train.epochs == 3
    assert r.model.arch == "resnet3d" and r.model.options["width"] == 8
    assert r.data.name == "shapes"  # defaults come from volrot/recipes/resnet3d_shapes.yaml
    f = tmp_path / "r.yaml"
    f.write_text("model: {arch: resnet3d, width: 4}\ntrain: {epochs: 7}\n", encoding="utf-8")
    r = build_recipe(f, {"lr": 0.5}, ["train.epochs=9"])
    assert (r.model.options["width"], r.optim.lr, r.train.epochs) == (4, 0.5, 9)


def test_torchrun_two_gloo_processes_match_single_process_eval(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "volrot", "train", "--epochs", "1", "--size", "16", "--set", "data.max_samples=21",
        "--set", "model.width=2", "--batch-size", "8", "--device", "cpu", "--out", str(out), "--name", "ddp", "-q",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = load_model(out / "ddp" / "best.safetensors")
    model, recorded = loaded.model, loaded.meta["metrics"]
    recipe = recipe_from_dict(loaded.meta["recipe"])
    bundle = load_data(recipe.data)
    for split in ("val", "test"):
        single = evaluate(model, bundle.split(split), bundle.task, batch_size=5)
        assert single["acc"] == pytest.approx(recorded[split]["acc"], abs=1e-12)
        assert single["auc"] == pytest.approx(recorded[split]["auc"], abs=1e-9)
        assert single["loss"] == pytest.approx(recorded[split]["loss"], rel=1e-5)
    # rank 0 alone wrote the log: one line per epoch
    assert len((out / "ddp" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_arch_and_data_flags_pick_the_shipped_pair_recipe():
    from volrot.config import build_recipe

    r = build_recipe(None, {"arch": "equilopo", "data": "nodule"}, [])
    assert (r.model.arch, r.data.name, r.train.batch_size, r.train.epochs) == ("equilopo", "nodule", 16, 100)
    assert r.optim.name == "adam" and r.optim.milestones == [0.5, 0.75]
    r = build_recipe(None, {"arch": "equilopo", "data": "nodulemnist3d", "epochs": 3}, [])
    assert r.train.batch_size == 16 and r.train.epochs == 3
