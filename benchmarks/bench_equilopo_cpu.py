"""CPU time per EquiLoPO training step (forward + backward + Adam step), JSON out.

    python benchmarks/bench_equilopo_cpu.py --blocks 1 8 --batch 4 --size 28 --out benchmarks/results/equilopo_cpu.json

Warm-up, then `--reps` timed steps (`time_calls` of volrot/benchmark.py, loaded from this tree
by path); reports the median and all samples. Timing only; nothing
is asserted. The machine, torch version and thread count are recorded with the numbers.

`--baseline-src DIR` also times another source tree of volrot (e.g. an earlier commit exported
with `git archive <rev> | tar -x -C DIR`) in a subprocess of the same run, and reports the
speed-up of this tree over it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if "--src" in sys.argv:
    sys.path.insert(0, sys.argv[sys.argv.index("--src") + 1])
else:
    sys.path.insert(0, str(REPO))

from volrot.models import create_model  # noqa: E402


def _load_harness():
    """volrot/benchmark.py of *this* tree, loaded by path: a baseline tree (`--src`) predates it."""
    spec = importlib.util.spec_from_file_location("volrot_benchmark_harness", REPO / "volrot" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


def _batch(batch: int, size: int):
    return torch.randn(batch, 1, size, size, size), torch.randint(0, 2, (batch,))


def time_train_step(model, batch: int, size: int, reps: int, warmup: int) -> list[float]:
    _, step = harness.make_steps(model, *_batch(batch, size), amp=False)
    model.train()
    return harness.time_calls(step, repeats=reps, warmup=warmup).samples


def time_inference(model, batch: int, size: int, reps: int, warmup: int) -> list[float]:
    infer, _ = harness.make_steps(model, *_batch(batch, size), amp=False)
    model.eval()
    return harness.time_calls(infer, repeats=reps, warmup=warmup).samples


def measure(args) -> list[dict]:
    results = []
    for blocks in args.blocks:
        torch.manual_seed(0)
        model = create_model("equilopo", num_classes=2, blocks=blocks, channels=args.channels, activation=args.activation)
        train = time_train_step(model, args.batch, args.size, args.reps, args.warmup)
        infer = time_inference(model, args.batch, args.size, args.reps, args.warmup)
        results.append(
            {
                "arch": "equilopo",
                "config": dict(model.volrot_config),
                "params": sum(p.numel() for p in model.parameters()),
                "batch": args.batch,
                "size": args.size,
                "train_step_s_median": statistics.median(train),
                "train_step_s": train,
                "inference_s_median": statistics.median(infer),
                "inference_s": infer,
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def run_worker(args, src: Path) -> list[dict]:
    """One `measure` in a fresh interpreter importing volrot from `src`."""
    cmd = [sys.executable, __file__, "--worker", "--src", str(src)]
    for key in ("batch", "size", "channels", "activation", "reps", "warmup", "threads"):
        value = getattr(args, key)
        if value is not None:
            cmd += [f"--{key}", str(value)]
    cmd += ["--blocks", *map(str, args.blocks)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, encoding="utf-8", env=env).stdout
    return json.loads(out)


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    merged = []
    for per_blocks in zip(*rounds):
        entry = dict(per_blocks[0])
        for key in ("train_step_s", "inference_s"):
            entry[key] = [t for r in per_blocks for t in r[key]]
            entry[key + "_median"] = statistics.median(entry[key])
        merged.append(entry)
    return merged


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--activation", default="local")
    ap.add_argument("--reps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="with --baseline-src: alternate baseline/current this many times")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON file to write (printed too)")
    ap.add_argument("--baseline-src", default=None, help="another volrot source tree to time in the same run")
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args)))
        return
    report = {
        "device": "cpu",
        "machine": f"{platform.machine()} {platform.processor()}".strip() + f", {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "note": "shared CPU machine: other processes were running; compare numbers within one run only",
    }
    if args.baseline_src:
        # alternate the two trees so that load changes on the machine hit both alike
        base, cur = [], []
        for _ in range(args.rounds):
            base.append(run_worker(args, Path(args.baseline_src).resolve()))
            cur.append(run_worker(args, REPO))
        report["baseline_src"] = args.baseline_src
        report["rounds"] = args.rounds
        report["baseline"] = merge_rounds(base)
        report["results"] = merge_rounds(cur)
        report["speedup_train_step"] = {
            str(b["config"]["blocks"]): b["train_step_s_median"] / r["train_step_s_median"]
            for b, r in zip(report["baseline"], report["results"])
        }
        report["speedup_inference"] = {
            str(b["config"]["blocks"]): b["inference_s_median"] / r["inference_s_median"]
            for b, r in zip(report["baseline"], report["results"])
        }
    else:
        report["results"] = measure(args)
    summary = {k: v for k, v in report.items() if k not in ("baseline", "results")}
    summary["train_step_s_median"] = {str(r["config"]["blocks"]): r["train_step_s_median"] for r in report["results"]}
    summary["inference_s_median"] = {str(r["config"]["blocks"]): r["inference_s_median"] for r in report["results"]}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
