"""Runs you can watch, stop, find and extend: threads, progress, Ctrl-C, resume, extend,
dry-run, `volrot runs`, curves and TensorBoard, and fast rejection of bad arguments."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from volrot.artifacts.checkpoint import read_tensors
from volrot.cli import app
from volrot.device import resolve_threads
from volrot.engine.train import lr_at, train

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--size", "16", "--set", "data.max_samples=16", "--set", "model.width=2", "--batch-size", "8",
        "--device", "cpu"]  # fmt: skip


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def same_weights(a: Path, b: Path) -> None:
    ta, _ = read_tensors(a)
    tb, _ = read_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=k)


# --- threads ---------------------------------------------------------------------------------


def test_thread_count_precedence(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(2) == (2, "--threads")
    assert resolve_threads(None) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    assert resolve_threads(None) == (1, "idle cores")  # a busy machine: one thread
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    n, source = resolve_threads(None)
    assert source == "idle cores" and n >= 1


def test_train_threads_are_honoured_inside_the_run(tiny_recipe, monkeypatch):
    before = torch.get_num_threads()
    run = train(tiny_recipe(train={"epochs": 1, "name": "t2", "threads": 2}), progress=False)
    assert run.threads == 2 and [r["threads"] for r in records(run.run_dir)] == [2]
    assert torch.get_num_threads() == before  # restored after the run
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    run = train(tiny_recipe(train={"epochs": 1, "name": "env3"}), progress=False)
    assert [r["threads"] for r in records(run.run_dir)] == [3]
    # a resume keeps the run's own count (bit-identical continuation) unless told otherwise
    part = train(tiny_recipe(train={"epochs": 2, "name": "keep"}), progress=False, stop_after_epoch=1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    train(None, resume=part.run_dir, progress=False)
    assert [r["threads"] for r in records(part.run_dir)] == [3, 3]


def test_apply_threads_sets_torch_and_onnxruntime_counts(monkeypatch):
    import volrot.device
    from volrot.device import apply_threads, onnx_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # apply_threads writes it; restored after the test
    try:
        assert apply_threads(2) == 2 and torch.get_num_threads() == 2 and onnx_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)
        volrot.device._applied.clear()


def test_bad_thread_count_is_one_line(tmp_path):
    res = runner.invoke(app, ["train", "--set", "train.threads=0", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "train.threads" in res.output
    assert not (tmp_path / "runs").exists()


# --- fast rejection: no torch import before the arguments are checked --------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "nope.x=1"], "unknown recipe section 'nope'"),
        (["train", "--set", "model.widht=8"], "model.widht"),
        (["train", "--arch", "nonsense"], "unknown arch 'nonsense'"),
        (["train", "--device", "gpu"], "--device"),
        (["train", "--augment", "spin"], "unknown augmentation 'spin'"),
        (["train", "--data", "nodulee"], "unknown dataset 'nodulee'"),
        (["train", "--data", "nifti:/no/such/folder"], "does not exist"),
        (["train", "--resume", "/no/such/run"], "no such run folder"),
        (["eval-rotated", "nope.safetensors"], "checkpoint not found"),
        (["predict", "nope.onnx", "scan.nii.gz"], "model file not found"),
        (["export", "nope.safetensors", "--out", "m.onnx"], "checkpoint not found"),
        (["inspect-activation", "nope.safetensors"], "checkpoint not found"),
        (["runs", "/no/such/folder"], "no such folder"),
    ],
)
def test_bad_arguments_are_refused_before_torch_is_imported(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "volrot", *args], cwd=tmp_path, capture_output=True, text=True,
        encoding="utf-8", env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "e3nn" not in imported
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:") and line.strip()]
    assert len(errors) == 1 and message in errors[0], errors


@pytest.mark.parametrize("args", [["--help"], ["models"], ["train", "--help"], ["runs", "--help"]])
def test_help_and_models_import_no_torch(args):
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom volrot.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\nassert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules, 'e3nn' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_catalog_matches_the_registry_and_preflight_lists():
    from volrot.data.medmnist import SHORT_NAMES
    from volrot.engine.augment import AUGMENTATIONS
    from volrot.engine.preflight import AUGMENTATIONS as LIGHT_AUGMENTATIONS
    from volrot.engine.preflight import MEDMNIST_NAMES
    from volrot.models import get_entry, list_models
    from volrot.models.catalog import BUILTIN

    assert sorted(BUILTIN) == list_models()
    for name, light in BUILTIN.items():
        e = get_entry(name)
        assert (e.description, e.symmetry_of().describe(), e.defaults, e.builder.__module__) == (
            light.description, light.symmetry_text, light.defaults, light.module)  # fmt: skip
    assert LIGHT_AUGMENTATIONS == AUGMENTATIONS and MEDMNIST_NAMES == SHORT_NAMES


# --- dry run, completion ----------------------------------------------------------------------


def test_dry_run_prints_recipe_and_parameters_and_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    res = runner.invoke(app, ["train", *TINY, "--out", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "arch: resnet3d" in res.output and "width: 2" in res.output and "max_samples: 16" in res.output
    from volrot.models import count_parameters, create_model

    n = count_parameters(create_model("resnet3d", num_classes=8, width=2))
    assert f"parameters: {n:,}" in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_shell_completion_is_offered():
    res = runner.invoke(app, ["--help"])
    assert "--install-completion" in res.output and "--show-completion" in res.output


# --- progress, Ctrl-C -------------------------------------------------------------------------


def test_log_output_has_heartbeat_lines_and_no_nan_loss(tmp_path, monkeypatch):
    import volrot.progress

    monkeypatch.setattr(volrot.progress, "HEARTBEAT_S", 0.0)
    res = runner.invoke(app, ["train", *TINY, "--epochs", "2", "--out", str(tmp_path), "--name", "hb"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    beats = [line for line in lines if line.startswith("epoch 1/2: 1/2 batches") and "batches/s" in line]
    assert beats and "remaining ~" in beats[0] and "elapsed" in beats[0], res.output
    assert any(line.startswith("epoch 2/2: 2/2 batches") and "val acc" in line for line in lines), res.output
    assert "nan" not in res.output.lower()


def test_ctrl_c_prints_interrupted_and_the_resume_command(tmp_path, monkeypatch):
    import volrot.engine.train as engine

    calls = {"n": 0}
    real = engine.evaluate

    def evaluate_then_interrupt(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # during epoch 2
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(engine, "evaluate", evaluate_then_interrupt)
    res = runner.invoke(app, ["train", *TINY, "--epochs", "3", "--out", str(tmp_path), "--name", "cc", "-q"])
    assert res.exit_code == 130
    run = tmp_path / "cc"
    assert "interrupted" in res.output and f"continue with: volrot train --resume {run}" in res.output
    monkeypatch.setattr(engine, "evaluate", real)
    res = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in records(run)] == [1, 2, 3]


def test_eval_rotated_progress_names_the_protocol(capsys, monkeypatch):
    import volrot.progress
    from volrot.engine.rotated import evaluate_rotated
    from volrot.models import create_model

    monkeypatch.setattr(volrot.progress, "HEARTBEAT_S", 0.0)
    model = create_model("resnet3d", num_classes=2, width=2)
    data = [(torch.randn(1, 16, 16, 16), i % 2) for i in range(4)]
    evaluate_rotated(model, data, task="binary", protocols=["octahedral"], batch_size=4, device="cpu", progress=True)
    out = capsys.readouterr().out
    assert "eval-rotated octahedral:" in out and "eval-rotated control:" in out and "remaining ~" in out


# --- resume: extend, finished, killed early, stale temp files ---------------------------------


def test_extending_a_finished_run_keeps_its_first_epochs_and_schedule(tiny_recipe, tmp_path):
    short = train(tiny_recipe(train={"epochs": 2, "name": "ext"}, optim={"milestones": [0.5]}), progress=False)
    before = records(short.run_dir)
    res = runner.invoke(app, ["train", "--resume", str(short.run_dir), "--epochs", "4", "-q"])
    assert res.exit_code == 0, res.output
    after = records(short.run_dir)
    assert [r["epoch"] for r in after] == [1, 2, 3, 4] and after[:2] == before
    # the schedule of the original 2 epochs is kept: the added epochs run at its final rate
    assert [r["lr"] for r in after] == pytest.approx([0.003, 0.0003, 0.0003, 0.0003])
    recipe_yaml = (short.run_dir / "recipe.yaml").read_text(encoding="utf-8")
    assert "epochs: 4" in recipe_yaml and "schedule_epochs: 2" in recipe_yaml
    # ... and equals a fresh 4-epoch run with that recipe, weight for weight
    fresh = train(tiny_recipe(train={"epochs": 4, "name": "fresh"}, optim={"milestones": [0.5], "schedule_epochs": 2}),
                  progress=False)  # fmt: skip
    same_weights(short.run_dir / "last.safetensors", fresh.run_dir / "last.safetensors")
    assert json.loads((short.run_dir / "metrics.json").read_text(encoding="utf-8"))["test"] == fresh.metrics["test"]
    # re-deriving the milestones from 4 epochs would have changed epoch 2's rate retroactively
    assert lr_at(tiny_recipe(train={"epochs": 4}, optim={"milestones": [0.5]}), 1) == 0.003


def test_resuming_a_finished_run_says_nothing_was_trained(tiny_recipe):
    run = train(tiny_recipe(train={"epochs": 1, "name": "done"}), progress=False)
    stamp = (run.run_dir / "best.safetensors").stat().st_mtime_ns
    res = runner.invoke(app, ["train", "--resume", str(run.run_dir)])
    assert res.exit_code == 0, res.output
    assert "nothing was trained" in res.output and "--epochs N" in res.output and "AUC" in res.output
    assert (run.run_dir / "best.safetensors").stat().st_mtime_ns == stamp
    res = runner.invoke(app, ["train", "--resume", str(run.run_dir), "--lr", "0.1"])
    assert res.exit_code == 2 and "only --epochs, --threads and -q" in res.output


def test_run_killed_before_its_first_epoch_resumes(tiny_recipe):
    # stop_after_epoch=0 leaves what a kill during epoch 1 leaves: recipe.yaml and data.json only
    early = train(tiny_recipe(train={"epochs": 2, "name": "early"}), progress=False, stop_after_epoch=0)
    assert sorted(p.name for p in early.run_dir.iterdir()) == ["data.json", "recipe.yaml"]
    resumed = train(None, resume=early.run_dir, progress=False)
    full = train(tiny_recipe(train={"epochs": 2, "name": "full"}), progress=False)
    assert resumed.completed and [r["epoch"] for r in records(early.run_dir)] == [1, 2]
    same_weights(resumed.run_dir / "best.safetensors", full.run_dir / "best.safetensors")


def test_resume_removes_stale_temp_files_of_volrot_only(tiny_recipe):
    part = train(tiny_recipe(train={"epochs": 2, "name": "tmpfiles"}), progress=False, stop_after_epoch=1)
    stale = [part.run_dir / ".best.safetensors.k2j4x9.tmp", part.run_dir / ".train_state.safetensors.a8b_0q.tmp"]
    keep = [part.run_dir / ".notes.txt.abc.tmp", part.run_dir / "mine.tmp"]
    for p in stale + keep:
        p.write_bytes(b"partial")
    res = runner.invoke(app, ["train", "--resume", str(part.run_dir), "-q"])
    assert res.exit_code == 0, res.output
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert "removed a temporary file" in res.output


# --- runs table, curves, TensorBoard ----------------------------------------------------------


def test_runs_table_lists_finished_and_stopped_runs(tiny_recipe):
    done = train(tiny_recipe(train={"epochs": 1, "name": "done-run"}), progress=False)
    train(tiny_recipe(train={"epochs": 2, "name": "stopped-run"}), progress=False, stop_after_epoch=1)
    rep = done.run_dir / "eval-rotated"
    rep.mkdir()
    (rep / "report.json").write_text(json.dumps({"protocols": {"haar": {"acc_mean": 0.25, "auc_mean": 0.5}}}),
                                     encoding="utf-8")  # fmt: skip
    from volrot.engine.runs import list_runs

    rows = {r.path.name: r for r in list_runs(done.run_dir.parent)}
    assert set(rows) == {"done-run", "stopped-run"}
    d, s = rows["done-run"], rows["stopped-run"]
    assert (d.arch, d.data, d.epochs_done, d.epochs, d.finished, d.best_epoch) == ("resnet3d", "shapes", 1, 1, True, 1)
    assert d.test_auc == done.metrics["test"]["auc"] and (d.rotated, d.rotated_acc) == ("haar", 0.25)
    assert (s.epochs_done, s.epochs, s.finished, s.test_auc) == (1, 2, False, None) and s.seconds > 0
    res = runner.invoke(app, ["runs", str(done.run_dir.parent)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any("1/1 (1)" in line and "0.250" in line for line in lines), res.output
    assert any(" 1/2 " in line and "0.250" not in line for line in lines), res.output


def test_curves_png_each_epoch_and_tensorboard_when_available(tiny_recipe, monkeypatch):
    import volrot.engine.train_log as train_log

    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            Path(log_dir).mkdir(parents=True)

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(train_log, "summary_writer_class", lambda: FakeWriter)
    run = train(tiny_recipe(train={"epochs": 2, "name": "tb"}), progress=False)
    assert (run.run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run.run_dir / "tensorboard").is_dir()
    assert {("train/loss", 1), ("val/auc", 2), ("train/auc", 2), ("lr", 1)} <= set(scalars)
    assert all(isinstance(r["train_auc"], float) for r in records(run.run_dir))


def test_training_without_tensorboard_installed(tiny_recipe, monkeypatch):
    import volrot.engine.train_log as train_log

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    assert train_log.summary_writer_class() is None
    run = train(tiny_recipe(train={"epochs": 1, "name": "notb"}), progress=False)
    assert (run.run_dir / "curves.png").is_file() and not (run.run_dir / "tensorboard").exists()


@pytest.mark.skipif(sys.modules.get("tensorboard") is None and __import__("importlib").util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (optional extra volrot[tensorboard])")  # fmt: skip
def test_real_tensorboard_event_files(tiny_recipe):
    run = train(tiny_recipe(train={"epochs": 1, "name": "realtb"}), progress=False)
    assert list((run.run_dir / "tensorboard").glob("events.out.tfevents.*"))
