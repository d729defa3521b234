"""volrot's EquiLoPO against the authors' code, side by side in one run; JSON out.

    python benchmarks/bench_vs_authors.py --authors-src /path/to/Arbitrary-Pattern-Recognition \
        --blocks 1 8 --batch 4 --size 28 --rounds 2 --threads 1

The authors' code (github zhemdi/Arbitrary-Pattern-Recognition: `EquiLoPO/` and
`MedMNIST/experiments/MedMNIST3D/models.py`) is never part of volrot: fetch it into an ignored
folder and pass its path. Without `--authors-src` (or when it cannot be imported) only volrot is
measured and the authors' figures are recorded as "not measured".

Configurations: the paper's ELPOResNet18 (8 blocks, 4 channels, order 2 = volrot `lmax 1`,
filter order 3 = volrot `filter_lmax 2`, local adaptive activation) and the 1-block
`ELPOResNet18Nano` (= volrot `blocks 1`). For each (implementation, blocks, inference|train), a
fresh child process builds the model, runs `--warmup` untimed and `--reps` timed calls (the
timing harness of volrot/benchmark.py) and reports its own peak RSS (`ru_maxrss`), so that
memory figures do not mix. Rounds interleave the implementations (A B A B ...), so that a
change of machine load hits both; the figure is the median over rounds of each child's median.
Also recorded: FLOPs forward and backward per sample (FlopCounterMode) and volrot's logit
invariance error over the 24 grid rotations in the precision used.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMPLS = ("authors", "volrot", "volrot-bf16")
AMP_IMPLS = ("volrot-bf16",)  # volrot under bf16 autocast (convs at >= 20³ in bf16, the rest fp32)
MODES = ("inference", "train")


def _authors_model(src: Path, blocks: int, num_classes: int):
    """The authors' ELPOResNet18 (8 blocks) or ELPOResNet18Nano (1 block) from their source tree."""
    sys.path[:0] = [str(src / "EquiLoPO"), str(src / "MedMNIST" / "experiments" / "MedMNIST3D")]
    stub = types.ModuleType("ILPONet")  # their models.py imports a sibling package it does not use for ELPO
    stub.InvLocalPatOrientConvolution = None
    sys.modules.setdefault("ILPONet", stub)
    import models  # noqa: PLC0415  (the authors' models.py)

    build = {8: models.ELPOResNet18, 1: models.ELPOResNet18Nano}[blocks]
    # downsample_by_pooling: their training script's flag for the paper runs (conv stride 2 with
    # their Retyper shortcut does not run at 28³: the shortcut keeps the full size)
    return build(in_channels=1, num_classes=num_classes, order=2, coefficients_type="adaptive", downsample_by_pooling=True)


def _volrot_model(blocks: int, num_classes: int):
    sys.path.insert(0, str(REPO))
    from volrot.models import create_model

    return create_model("equilopo", num_classes=num_classes, in_channels=1, blocks=blocks, channels=4, lmax=1,
                        filter_lmax=2, activation="local", coefficients="adaptive")


def _harness():
    sys.path.insert(0, str(REPO))
    import volrot.benchmark as harness

    return harness


def child(args) -> dict:
    """One (impl, blocks, mode) measurement in this process; printed as JSON on stdout."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    harness = _harness()
    device = torch.device(args.device)
    if device.type == "cuda":  # fp32 means fp32 (cuDNN's TF32 default would change every conv)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = (_authors_model(Path(args.authors_src), args.blocks, 2) if args.impl == "authors"
             else _volrot_model(args.blocks, 2)).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size, args.size, generator=gen).to(device)
    y = torch.randint(0, 2, (args.batch,), generator=gen).to(device)
    out: dict = {"impl": args.impl, "blocks": args.blocks, "mode": args.mode}
    if args.flops:
        out["flops_forward_per_sample"] = harness.forward_flops(model, x) / args.batch
        out["flops_backward_per_sample"] = harness.train_flops(model, x, y)["backward"] / args.batch
        if args.impl != "authors":
            out["invariance_error"] = harness.invariance_error(model, x[:2], amp=args.impl in AMP_IMPLS)
        return out
    infer, step = harness.make_steps(model, x, y, amp=args.impl in AMP_IMPLS)
    fn = infer if args.mode == "inference" else step
    model.train(args.mode == "train")
    out["seconds"] = harness.time_calls(fn, device=device, repeats=args.reps, warmup=args.warmup).to_dict()
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        out["peak_gpu_bytes"] = harness.peak_memory(fn, device=device)["peak_bytes_absolute"]
    return out


def _run_child(args, impl: str, blocks: int, mode: str, flops: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--blocks", str(blocks), "--mode", mode,
           "--batch", str(args.batch), "--size", str(args.size), "--reps", str(args.reps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--device", args.device]
    if args.authors_src:
        cmd += ["--authors-src", str(args.authors_src)]
    if flops:
        cmd.append("--flops")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", env=env)
    if proc.returncode != 0:
        return {"impl": impl, "blocks": blocks, "mode": mode, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _authors_importable(src: str | None) -> str | None:
    """None when the authors' code can be measured, else why not."""
    if not src:
        return "not measured: no --authors-src given"
    p = Path(src)
    if not (p / "EquiLoPO" / "EquiLoPO").is_dir() or not (p / "MedMNIST" / "experiments" / "MedMNIST3D" / "models.py").is_file():
        return f"not measured: {p} does not hold EquiLoPO/EquiLoPO and MedMNIST/experiments/MedMNIST3D/models.py"
    return None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--authors-src", default=None, help="root of the authors' repository (fetched, never committed)")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 8], choices=[1, 8])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--reps", type=int, default=2, help="timed calls per child")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="interleaved A/B rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/equilopo_vs_authors_<hw>_b<B>_s<S>.json)")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.blocks = args.blocks[0]
        print(json.dumps(child(args)))
        return {}

    harness = _harness()
    why_not = _authors_importable(args.authors_src)
    impls = [i for i in IMPLS if i != "authors" or why_not is None]
    started = time.time()
    load_start = os.getloadavg()[0]
    results: dict = {}
    for blocks in args.blocks:
        entry: dict = {}
        for impl in impls:
            entry[impl] = {"costs": _run_child(args, impl, blocks, "inference", flops=True)}
        for r in range(args.rounds):
            order = impls if r % 2 == 0 else impls[::-1]
            for mode in MODES:
                for impl in order:
                    res = _run_child(args, impl, blocks, mode)
                    entry[impl].setdefault(mode, []).append(res)
                    print(f"{blocks} blk {impl:8s} {mode:9s} round {r}: "
                          f"{res.get('seconds', {}).get('median', res.get('error'))}", file=sys.stderr)
        summary: dict = {}
        for impl in impls:
            s: dict = {**entry[impl]["costs"]}
            for mode in MODES:
                runs = [x for x in entry[impl][mode] if "seconds" in x]
                s[f"{mode}_s"] = statistics.median(x["seconds"]["median"] for x in runs) if runs else None
                s[f"{mode}_peak_rss_bytes"] = max((x["peak_rss_bytes"] for x in runs), default=None)
                if args.device.startswith("cuda"):
                    s[f"{mode}_peak_gpu_bytes"] = max((x["peak_gpu_bytes"] for x in runs), default=None)
                s[f"{mode}_runs"] = entry[impl][mode]
            summary[impl] = s
        if "authors" in summary:
            a = summary["authors"]
            summary["speedup"] = {
                impl: {m: (a[f"{m}_s"] / summary[impl][f"{m}_s"] if a[f"{m}_s"] and summary[impl][f"{m}_s"] else None) for m in MODES}
                for impl in impls if impl != "authors"
            }
        else:
            summary["authors"] = why_not
        results[f"{blocks}_blocks"] = summary
    import torch

    torch.set_num_threads(args.threads)
    report = {
        "schema": "volrot-vs-authors/1",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "device": harness.device_info(args.device),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "batch": args.batch, "size": args.size, "reps": args.reps, "warmup": args.warmup, "rounds": args.rounds,
        "threads": args.threads, "authors_src": args.authors_src, "results": results,
    }
    out = Path(args.out) if args.out else (REPO / "benchmarks" / "results" /
                                          f"equilopo_vs_authors_{harness.hardware_slug(report['device'])}_b{args.batch}_s{args.size}.json")
    harness.write_report(report, out)
    print(f"wrote {out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
