"""Overhead of rotate+predict over predict alone, measured in the same run (JSON on stdout).

For a model and a batch of volumes on one device it times, per forward-passed volume:
- `predict`: the model on unrotated volumes;
- `trilinear`: `rotate_trilinear` (one grid per rotation, batch packed in channels) + the model;
- `exact`: `rotate_exact_batch` (rot90 compositions) + the model;
- `evaluate_rotated`: the whole library call (haar protocol + control, metrics included),
  divided by the number of forward-passed volumes it made.
Each `*_ratio` is that time over `predict` (goal on GPU: ≤ 1.3). Times are medians of
`--repeats` runs after one warm-up.

    PYTHONPATH=. python benchmarks/bench_rotated.py    # CPU, tiny: 16³, resnet3d width 4
    PYTHONPATH=. python benchmarks/bench_rotated.py --device cuda --size 64 --width 16 --batch 64
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

from volrot.data.base import ArrayDataset
from volrot.engine.rotated import evaluate_rotated
from volrot.models.registry import create_model
from volrot.so3.groups import octahedral
from volrot.so3.sampling import haar
from volrot.so3.volume import apply_sphere_mask, rotate_exact_batch, rotate_trilinear


def _timed(fn, device, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="resnet3d")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16, help="volumes per forward pass")
    ap.add_argument("--rotations", type=int, default=8, help="rotations per timed call")
    ap.add_argument("--samples", type=int, default=32, help="dataset size for the evaluate_rotated timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.arch, num_classes=2, width=args.width).to(device).eval()
    s, b, m = args.size, args.batch, args.rotations
    x = apply_sphere_mask(torch.randn(b, 1, s, s, s, device=device))
    mats = torch.as_tensor(haar(m, seed=0).matrices, dtype=torch.float32, device=device)
    group = octahedral()[:m]

    @torch.inference_mode()
    def predict():
        for _ in range(m):  # the same number of forward passes as the rotated variants
            model(x)

    @torch.inference_mode()
    def trilinear():
        for i in range(m):
            model(apply_sphere_mask(rotate_trilinear(x, mats[i : i + 1])[0]))

    @torch.inference_mode()
    def exact():
        for i in range(len(group)):
            model(rotate_exact_batch(x, group[i : i + 1])[0])

    forwards = b * m
    t_pred = _timed(predict, device, args.repeats) / forwards
    t_tri = _timed(trilinear, device, args.repeats) / forwards
    t_exact = _timed(exact, device, args.repeats) / (b * len(group))

    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.normal(size=(args.samples, 1, s, s, s)).astype(np.float32), np.arange(args.samples) % 2)
    kw = dict(task="binary", protocols=["haar"], n=m, seed=0, device=device, batch_size=b)
    evaluate_rotated(model, ds, **kw)  # warm-up
    eval_times, eval_forwards = [], 0
    for _ in range(args.repeats):
        rep = evaluate_rotated(model, ds, **kw)
        eval_times.append(rep.meta["elapsed_s"])
        eval_forwards = rep.meta["rotated_forwards"] + rep.meta["n_samples"]
    t_eval = statistics.median(eval_times) / eval_forwards

    result = {
        "benchmark": "rotated_overhead",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "arch": args.arch,
        "width": args.width,
        "params": sum(p.numel() for p in model.parameters()),
        "input": [b, 1, s, s, s],
        "rotations": m,
        "repeats": args.repeats,
        "predict_ms_per_volume": 1e3 * t_pred,
        "trilinear_ms_per_volume": 1e3 * t_tri,
        "exact_ms_per_volume": 1e3 * t_exact,
        "evaluate_rotated_ms_per_volume": 1e3 * t_eval,
        "trilinear_ratio": t_tri / t_pred,
        "exact_ratio": t_exact / t_pred,
        "evaluate_rotated_ratio": t_eval / t_pred,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
