"""DDP faults under `torchrun` with 2 gloo processes (issue #13, items 5 and 11).

- A rank that stops answering (SIGSTOP) ends the other's wait after `train.ddp_timeout_s`
  (5 s here; 600 s by default instead of torch's 30 minutes) with one line and exit code 2.
- A user error found by rank 0 (an existing `--name`) reaches every rank: one line, printed
  once, no traceback from any rank, every worker exits 2. torchrun itself then prints its own
  failure report and exits 1; that part is torchrun's, not volrot's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "volrot", "train"]
TINY = ["--size", "16", "--set", "data.max_samples=16", "--set", "model.width=2", "--batch-size", "8", "--device", "cpu", "-q"]


def _children(ppid: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (Linux /proc)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != ppid:
                continue
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for item in env:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(d.name)
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _worker_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_stalled_rank_ends_the_run_after_the_timeout(tmp_path):
    log = tmp_path / "torchrun.log"
    out = tmp_path / "runs"
    cmd = [*TORCHRUN, "--epochs", "500", *TINY, "--out", str(out), "--name", "stall", "--set", "train.ddp_timeout_s=5"]
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (out / "stall" / "recipe.yaml").exists():  # rank 0 made the run folder: the group exists
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.2)
        ranks = _children(proc.pid)
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[1], signal.SIGSTOP)
        while _alive(ranks[0]):  # rank 0 must give up by itself (the default would wait 30 minutes)
            assert time.monotonic() < deadline, log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.2)
        os.kill(ranks[1], signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(encoding="utf-8")
    lines = _worker_lines(text)
    assert len(lines) == 1, text[-3000:]
    assert "rank 0: no answer from the other ranks for 5 s (train.ddp_timeout_s)" in lines[0]
    assert "[rank0]" not in text and "[rank1]" not in text  # no worker traceback
    assert "failed (exitcode: 2) local_rank: 0" in text  # torchrun's own report of rank 0's exit
    assert (out / "stall" / "recipe.yaml").is_file()  # what finished epochs wrote is kept


def test_user_error_under_torchrun_is_one_line_from_every_rank(tmp_path):
    out = tmp_path / "runs"
    (out / "taken").mkdir(parents=True)
    (out / "taken" / "notes.txt").write_text("mine\n", encoding="utf-8")
    cmd = [*TORCHRUN, "--epochs", "1", *TINY, "--out", str(out), "--name", "taken"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, encoding="utf-8", timeout=300)
    text = proc.stdout + proc.stderr
    lines = _worker_lines(text)
    assert lines == [f"error: run folder {out / 'taken'} already exists and is not empty (use --resume {out / 'taken'} or another --name)"], text[-3000:]
    assert "[rank0]" not in text and "[rank1]" not in text  # no worker traceback
    assert "exitcode  : 2" in text and "exitcode  : 1" not in text  # every worker exited 2
    assert proc.returncode == 1  # torchrun's own code for "a worker failed"
    assert sorted(p.name for p in (out / "taken").iterdir()) == ["notes.txt"]
