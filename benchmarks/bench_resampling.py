"""How much a resampling path loses: round trips R then Rᵀ, and (shapes) one rotation against
the volume rendered directly in the pose. JSON out, a table printed.

    python benchmarks/bench_resampling.py --volumes 32 --rotations 8 --out benchmarks/results/resampling.json

For each path (`volrot.so3.resample.RESAMPLERS`) and data set:
- `round_trip`: ‖RᵀR·x − x‖ / ‖x‖ inside the inscribed sphere (mean and max over volumes ×
  Haar rotations). On `shapes` with and without the noise field (white noise is the first thing
  an interpolator damps), and on the real AdrenalMNIST3D test volumes (28³ and 64³) when
  `--medmnist` holds them (each volume zeroed outside its inscribed sphere first).
- `noise_std_kept` (white Gaussian noise, zero outside the sphere, like the `shapes` noise):
  the standard deviation left inside the sphere after one rotation and after a round trip, as
  a fraction of the original (the statistic a model can read off the noise).
- `vs_rendered` (shapes, noise-free): ‖R·x − render(R)‖ / ‖render(R)‖, one resampling against
  the ground truth rendered in the pose (no noise, so the renderer's pose is the only change).
Relative figures only; timing ratios spline3 / trilinear from the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from volrot.data.synthetic import PoseRenderer  # noqa: E402
from volrot.so3.resample import RESAMPLERS, rotate_resampled, round_trip, round_trip_error  # noqa: E402
from volrot.so3.sampling import haar  # noqa: E402
from volrot.so3.volume import apply_sphere_mask, sphere_mask  # noqa: E402


def _stats(v: np.ndarray) -> dict:
    return {"mean": float(np.mean(v)), "max": float(np.max(v)), "n": int(v.size)}


def vs_rendered(renderer: PoseRenderer, idx, mats, method: str) -> np.ndarray:
    canon = torch.from_numpy(renderer.render(idx, noise=False))
    mask = sphere_mask(canon.shape[-3:]).double()
    out = []
    for m in mats:
        truth = torch.from_numpy(renderer.render(idx, m, noise=False)).double()
        got = apply_sphere_mask(rotate_resampled(canon, m, method)[0]).double()
        out.append((((got - truth) * mask).flatten(1).norm(dim=1) / (truth * mask).flatten(1).norm(dim=1)).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=int, default=32)
    ap.add_argument("--rotations", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs="*", default=[16, 28], help="shapes sizes (none: skip shapes)")
    ap.add_argument("--medmnist-volumes", type=int, nargs=2, default=[32, 8], metavar=("N28", "N64"),
                    help="AdrenalMNIST3D test volumes at 28³ and 64³ (0: skip)")
    shared = next((q / "shared" for q in REPO.parents if (q / "shared" / "data" / "medmnist").is_dir()), REPO / "shared")
    ap.add_argument("--medmnist", default=str(shared / "data" / "medmnist"), help="folder of adrenalmnist3d*.npz")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="-")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    mats = haar(args.rotations, args.seed).matrices
    results, seconds = {}, {m: 0.0 for m in RESAMPLERS}
    for size in args.sizes:
        r = PoseRenderer("test", seed=0, size=size, n=args.volumes)
        idx = range(args.volumes)
        noisy = torch.from_numpy(r.render(idx))
        clean = torch.from_numpy(r.render(idx, noise=False))
        for method in RESAMPLERS:
            t = time.perf_counter()
            results[f"shapes{size} noisy round_trip {method}"] = _stats(round_trip_error(noisy, mats, method))
            seconds[method] += time.perf_counter() - t
            results[f"shapes{size} clean round_trip {method}"] = _stats(round_trip_error(clean, mats, method))
            results[f"shapes{size} clean vs_rendered {method}"] = _stats(vs_rendered(r, idx, mats, method))
    for size in args.sizes:
        gen = torch.Generator().manual_seed(args.seed)
        noise = apply_sphere_mask(torch.randn(args.volumes, 1, size, size, size, generator=gen, dtype=torch.float64))
        inside = sphere_mask((size,) * 3)
        std0 = noise[..., inside].std()
        for method in RESAMPLERS:
            once = rotate_resampled(noise, mats, method)
            back = round_trip(noise, mats, method)
            results[f"noise{size} std_kept_one_rotation {method}"] = _stats((once[..., inside].std(dim=-1) / std0).numpy())
            results[f"noise{size} std_kept_round_trip {method}"] = _stats((back[..., inside].std(dim=-1) / std0).numpy())
    for name, fname, count in zip(("adrenal28", "adrenal64"), ("adrenalmnist3d.npz", "adrenalmnist3d_64.npz"), args.medmnist_volumes):
        path = Path(args.medmnist) / fname
        if not path.is_file() or count < 1:
            continue
        with np.load(path) as z:
            x = torch.from_numpy(z["test_images"][:count].astype(np.float32) / 255.0)[:, None]
        x = apply_sphere_mask(x)
        for method in RESAMPLERS:
            results[f"{name} round_trip {method}"] = _stats(round_trip_error(x, mats, method))
    report = {
        "volumes": args.volumes,
        "medmnist_volumes": args.medmnist_volumes,
        "rotations": args.rotations,
        "seed": args.seed,
        "threads": args.threads,
        "results": results,
        "time_ratio_spline3_over_trilinear": seconds["spline3"] / seconds["trilinear"] if seconds["trilinear"] else None,
        "torch": torch.__version__,
    }
    keys = sorted({k.rsplit(" ", 1)[0] for k in results}, key=list(dict.fromkeys(k.rsplit(" ", 1)[0] for k in results)).index)
    print(f"{'data / measure':36s} " + " ".join(f"{m:>18s}" for m in RESAMPLERS))
    for k in keys:
        cells = [results.get(f"{k} {m}") for m in RESAMPLERS]
        print(f"{k:36s} " + " ".join(f"{c['mean']:.3f} (max {c['max']:.3f})" for c in cells))
    if seconds["trilinear"] > 0:
        print(f"time spline3 / trilinear (shapes noisy round trips): {report['time_ratio_spline3_over_trilinear']:.1f}x")
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
