"""Training speed against the torch thread count while another CPU job runs. Prints JSON.

Runs `python -m volrot train` (the first-run recipe, one epoch, `data.max_samples` volumes per
split) in subprocesses with different thread settings, interleaved, while `--hogs` busy-loop
processes occupy CPU cores (another user's job). Reports each setting's epoch time (the
`seconds` of metrics.jsonl) as a ratio to `--threads 1` in the same run: never absolute seconds.

    python benchmarks/bench_threads.py                      # 1 hog, 1 repeat, every setting
    python benchmarks/bench_threads.py --settings 1 default 2-passive --repeats 2

Settings: `default` (neither variable set: volrot's choice, `volrot.device.resolve_threads` and
`prefer_passive_wait`), `1`, `2` (OMP_NUM_THREADS=2 with OpenMP's default spinning wait: what
torch does by itself on a 2-core machine) and `2-passive` (2 threads with OMP_WAIT_POLICY=PASSIVE:
threads sleep instead of spinning while they wait for each other). A collapsing setting takes
10x longer or more: leave `2` out on a shared machine once it has been measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "default": {},
    "1": {"OMP_NUM_THREADS": "1"},
    "2": {"OMP_NUM_THREADS": "2"},
    "2-passive": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}


def _hog() -> None:
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def epoch_seconds(env_extra: dict[str, str], samples: int, out: Path, name: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env.update(env_extra)
    cmd = [sys.executable, "-m", "volrot", "train", "--epochs", "1", "--device", "cpu", "-q",
           "--set", f"data.max_samples={samples}", "--out", str(out), "--name", name]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    line = (out / name / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return float(json.loads(line)["seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hogs", type=int, default=1, help="busy-loop processes running meanwhile")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--samples", type=int, default=64, help="data.max_samples (per split)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args()
    if "1" not in args.settings:
        p.error("the settings must include 1 (the baseline of the ratios)")

    load_before = os.getloadavg()
    hogs = [mp.Process(target=_hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    times: dict[str, list[float]] = {k: [] for k in args.settings}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                for key in args.settings:
                    times[key].append(epoch_seconds(SETTINGS[key], args.samples, Path(tmp), f"{key}-{r}"))
    finally:
        for h in hogs:
            h.terminate()
    base = statistics.median(times["1"])
    print(json.dumps({
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "hogs": args.hogs,
        "samples": args.samples,
        "epoch_time_ratio_to_1_thread": {k: round(statistics.median(v) / base, 2) for k, v in times.items()},
        "ratios_per_repeat": {k: [round(t / base, 2) for t in v] for k, v in times.items()},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
