"""benchmarks/gpu_campaign.sh end to end at a tiny size on the CPU (`--tiny`), so that it is
known to run the moment a GPU is at hand. Nothing about speed is asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_campaign_runs_end_to_end_tiny(tmp_path):
    out = tmp_path / "campaign"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_campaign.sh"), "--tiny", "--data", "shapes", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "campaign.json").read_text(encoding="utf-8"))
    bench = summary["bench"]
    fp32 = bench["bench_equilopo_fp32"]
    assert fp32["model"]["arch"] == "equilopo" and fp32["reference"]["arch"] == "resnet3d"
    assert fp32["model"]["flops_backward_per_sample"] > 0 and fp32["model"]["saved_activation_bytes_per_sample"] > 0
    assert fp32["model"]["invariance_error"] < 1e-4
    assert bench["bench_equilopo_bf16"]["precision"] == "bf16 autocast"
    assert "skipped" in bench["bench_equilopo_compiled"]
    vs = bench["equilopo_vs_authors"]["results"]["1_blocks"]
    assert vs["authors"].startswith("not measured") and vs["volrot"]["train_s"] > 0
    assert set(summary["runs"]) == {"equilopo", "resnet3d", "resnet3d-so3"}
    for name, run in summary["runs"].items():
        assert run["epochs_done"] == 1, name
        assert run["rotated"]["protocols"]["haar"]["count"] == 2, name
        assert "control" in run["rotated"]["protocols"], name
