"""Run folders and file-system failures (issue #13, items 9, 12, 13).

Classes of failure, each through the CLI: a run name that is a path or too long; an `--out`
that is a file, read-only, or fills up (disk full) during the run; two runs starting in the same
instant. Each: exit 2, one line, no traceback, nothing left behind that this run created (and
nothing else touched), never a half-written checkpoint.
"""

from __future__ import annotations

import errno
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import multiprocessing as mp
import pytest
from typer.testing import CliRunner

import volrot.fileio
from volrot import load_model
from volrot.cli import app
from volrot.engine import run_folder
from volrot.engine.run_folder import create_run_folder
from volrot.errors import UserError

runner = CliRunner()
TINY = ["--epochs", "1", "--size", "16", "--set", "data.max_samples=16", "--set", "model.width=2",
        "--batch-size", "8", "--device", "cpu", "-q"]  # fmt: skip


def one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


# --- names are names (item 12) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("../../escape", "is a path"),
        ("a/b", "is a path"),
        ("/tmp/abs-run", "is a path"),
        ("..", "is a path"),
        ("x" * 300, "is 300 characters long; at most 128"),
        ("tab\there", "control character"),
    ],
)
def test_run_name_that_is_not_a_folder_name_is_refused(tmp_path, name, expected):
    out = tmp_path / "work" / "runs"
    res = runner.invoke(app, ["train", *TINY, "--out", str(out), "--set", f"train.name={name}"])
    assert expected in one_line_error(res)
    assert not (tmp_path / "work").exists() and not (tmp_path / "escape").exists()
    res = runner.invoke(app, ["train", *TINY, "--out", str(out), "--name", name])
    assert expected in one_line_error(res)
    assert all_files(tmp_path) == []


# --- atomic creation (item 13) ---------------------------------------------------------------

NOW = datetime(2026, 11, 30, 12, 0, 0)


def _create(out: str) -> str:
    return str(create_run_folder(out, None, "resnet3d-shapes", now=NOW).path)


def test_runs_starting_in_the_same_second_get_distinct_folders(tmp_path):
    out = tmp_path / "runs"
    barrier = threading.Barrier(8)
    got: list[str] = []

    def go():
        barrier.wait()
        got.append(_create(str(out)))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stem = "resnet3d-shapes-20261130-120000"
    assert sorted(Path(g).name for g in got) == sorted([stem] + [f"{stem}-{i}" for i in range(2, 9)])
    # processes too (the guarantee is the file system's exclusive mkdir, not a lock in Python)
    with ProcessPoolExecutor(4, mp_context=mp.get_context("spawn")) as pool:
        more = list(pool.map(_create, [str(out)] * 4))
    assert len(set(more) | set(got)) == 12


def test_one_named_run_wins_a_race_for_its_name(tmp_path):
    out = tmp_path / "runs"
    (out / "pre").mkdir(parents=True)  # an existing empty folder may be claimed once, too
    for name in ("fresh", "pre"):
        barrier = threading.Barrier(6)
        wins, losses = [], []

        def go():
            barrier.wait()
            try:
                wins.append(create_run_folder(out, name, "unused"))
            except UserError as e:
                losses.append(str(e))

        threads = [threading.Thread(target=go) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and len(losses) == 5, (wins, losses)
        assert all("already exists and is not empty" in m for m in losses)


# --- --out that cannot be written (item 9) ---------------------------------------------------


def test_out_naming_a_regular_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("keep me\n", encoding="utf-8")
    assert f"--out {f}: {f} is a file, not a folder" in one_line_error(runner.invoke(app, ["train", *TINY, "--out", str(f)]))
    line = one_line_error(runner.invoke(app, ["train", *TINY, "--out", str(f / "runs")]))
    assert f"{f} is a file, not a folder" in line
    assert f.read_text(encoding="utf-8") == "keep me\n" and all_files(tmp_path) == [f]


def _read_only(monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(volrot.fileio.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(run_folder.os, "mkdir", refuse)


def test_read_only_out_for_train_and_predict(tmp_path, monkeypatch):
    from tests.predict_builders import SIZE, make_checkpoint, write_nifti
    from tests.data_builders import blob_volume

    ck = make_checkpoint(tmp_path / "ck.safetensors", preprocessing={"source": "generated", "size": SIZE, "intensity": "none", "scale": 1.0, "offset": 0.0})
    scan = write_nifti(tmp_path / "scan.nii.gz", blob_volume(0, shape=(SIZE,) * 3))
    before = all_files(tmp_path)
    _read_only(monkeypatch)
    line = one_line_error(runner.invoke(app, ["train", *TINY, "--out", str(tmp_path / "ro")]))
    assert f"--out {tmp_path / 'ro'}: cannot write into {tmp_path} (read-only file system)" in line
    res = runner.invoke(app, ["predict", str(ck), str(scan), "--device", "cpu", "--out", str(tmp_path / "ro" / "p.csv"), "-q"])
    assert f"--out {tmp_path / 'ro' / 'p.csv'}: cannot write into {tmp_path} (read-only file system)" in one_line_error(res)
    assert all_files(tmp_path) == before


# --- disk full during the run (item 9) -------------------------------------------------------


def _disk_full_on(monkeypatch, when):
    """Make the atomic writes of checkpoints fail like a full disk once `when(path)` is true:
    half the bytes reach the temporary file, then ENOSPC."""
    import volrot.artifacts.checkpoint as ck

    real = ck.atomic_write

    def failing(path, write, suffix=".tmp"):
        if not when(Path(path)):
            return real(path, write, suffix)

        def half_then_fail(tmp):
            write(tmp)
            data = Path(tmp).read_bytes()
            Path(tmp).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", tmp)

        return real(path, half_then_fail, suffix)

    monkeypatch.setattr(ck, "atomic_write", failing)


def test_disk_full_before_anything_worth_keeping_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "new" / "runs"
    _disk_full_on(monkeypatch, lambda p: p.suffix == ".safetensors")
    line = one_line_error(runner.invoke(app, ["train", *TINY, "--out", str(out), "--name", "r"]))
    assert "best.safetensors: disk full" in line and "was removed again" in line
    assert all_files(tmp_path) == []  # run folder, runs/ and new/ were this run's: all gone


def test_disk_full_leaves_other_files_alone(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    (out / "mine.txt").parent.mkdir()
    (out / "mine.txt").write_text("x", encoding="utf-8")
    _disk_full_on(monkeypatch, lambda p: p.suffix == ".safetensors")
    one_line_error(runner.invoke(app, ["train", *TINY, "--out", str(out)]))
    assert all_files(tmp_path) == [out, out / "mine.txt"]


def test_disk_full_after_an_epoch_keeps_a_resumable_run(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    writes = {"n": 0}

    def second_epoch(p: Path) -> bool:  # epoch 1 writes best, last, train_state
        writes["n"] += 1
        return writes["n"] > 3

    _disk_full_on(monkeypatch, second_epoch)
    args = [a if a != "1" else "2" for a in TINY]  # two epochs
    line = one_line_error(runner.invoke(app, ["train", *args, "--out", str(out), "--name", "r"]))
    run = out / "r"
    assert "disk full" in line and f"--resume {run}" in line
    names = sorted(p.name for p in run.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names  # no half-written checkpoint
    assert load_model(run / "last.safetensors").meta["epoch"] == 1
    monkeypatch.undo()
    res = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert load_model(run / "last.safetensors").meta["epoch"] == 2


def test_disk_full_writing_predictions_writes_nothing(tmp_path, monkeypatch):
    from tests.data_builders import blob_volume
    from tests.predict_builders import SIZE, make_checkpoint, write_nifti

    ck = make_checkpoint(tmp_path / "ck.safetensors", preprocessing={"source": "generated", "size": SIZE, "intensity": "none", "scale": 1.0, "offset": 0.0})
    scan = write_nifti(tmp_path / "scan.nii.gz", blob_volume(0, shape=(SIZE,) * 3))
    before = all_files(tmp_path)
    real = volrot.fileio.atomic_write

    def full(path, write, suffix=".tmp"):
        def fail(tmp):
            write(tmp)
            raise OSError(errno.ENOSPC, "No space left on device", tmp)

        return real(path, fail, suffix)

    monkeypatch.setattr(volrot.fileio, "atomic_write", full)
    res = runner.invoke(app, ["predict", str(ck), str(scan), "--device", "cpu", "--out", str(tmp_path / "p.csv"), "-q"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "cannot write the predictions (disk full); nothing was written" in res.output
    assert all_files(tmp_path) == before


def test_a_failed_write_names_the_file_it_was_for(tmp_path):
    """A real full disk fails in write() with an OSError that names no file; atomic_write names
    the target, and leaves neither it nor a temporary file."""
    target = tmp_path / "best.safetensors"

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        volrot.fileio.atomic_write(target, full)
    assert e.value.filename == str(target) and volrot.fileio.os_error_reason(e.value) == "disk full"
    assert all_files(tmp_path) == []
