"""CPU time per EquiLoPO training step (forward + backward + Adam step), JSON out.

    python benchmarks/bench_equilopo_cpu.py --blocks 1 8 --batch 4 --size 28 --out benchmarks/results/equilopo_cpu.json

Warm-up, then `--reps` timed steps; reports the median and all samples. Timing only; nothing
is asserted. The machine, torch version and thread count are recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from volrot.models import create_model  # noqa: E402
from volrot.models.equilopo import live_parameter_count, paper_parameter_count  # noqa: E402


def time_train_step(model, batch: int, size: int, reps: int, warmup: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size, size)
    y = torch.randint(0, 2, (batch,))
    model.train()
    times = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def time_inference(model, batch: int, size: int, reps: int, warmup: int) -> list[float]:
    x = torch.randn(batch, 1, size, size, size)
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + reps):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--activation", default="local")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON file to write (printed too)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for blocks in args.blocks:
        model = create_model("equilopo", num_classes=2, blocks=blocks, channels=args.channels, activation=args.activation)
        train = time_train_step(model, args.batch, args.size, args.reps, args.warmup)
        infer = time_inference(model, args.batch, args.size, args.reps, args.warmup)
        results.append(
            {
                "arch": "equilopo",
                "config": dict(model.volrot_config),
                "params_live": live_parameter_count(model),
                "params_paper": paper_parameter_count(model),
                "batch": args.batch,
                "size": args.size,
                "train_step_s_median": statistics.median(train),
                "train_step_s": train,
                "inference_s_median": statistics.median(infer),
                "inference_s": infer,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    report = {
        "device": "cpu",
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
