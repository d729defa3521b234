"""Time the two GMR-Conv forms (dense kernel vs shell-wise depthwise + 1×1) on the recipe's layers.

For every distinct layer shape of the `gmr` ResNet-18 at `--width` on a `--size`³ input, times
forward and forward+backward of one `GMRConv3d` in each form, then one full training step of the
whole model in each form. Prints JSON (medians over `--repeats` after one warm-up).

    python benchmarks/bench_gmr_forms.py --width 32 --batch 4 --size 28
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from volrot.models import create_model
from volrot.models.gmr import GMRConv3d
from volrot.models.symmetric_pool import downsampled_size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def layer_shapes(width: int, kernel_sizes: list[int], size: int, in_channels: int = 1):
    """Distinct (C_in, C_out, k, spatial size) of the GMR convs in the ResNet-18 layout."""
    shapes = [(in_channels, width, kernel_sizes[0], size)]
    prev, n = width, size
    for stage, k in enumerate(kernel_sizes):
        planes = width * 2**stage
        if stage > 0:
            n = downsampled_size(n)
        shapes.append((prev, planes, k, n))
        shapes.append((planes, planes, k, n))
        prev = planes
    return list(dict.fromkeys(shapes))


def bench_layer(c_in, c_out, k, n, batch, repeats, device):
    out = {"c_in": c_in, "c_out": c_out, "kernel": k, "size": n}
    x = torch.randn(batch, c_in, n, n, n, device=device)
    ref = GMRConv3d(c_in, c_out, k, "dense").to(device)
    for form in ("dense", "shells"):
        conv = GMRConv3d(c_in, c_out, k, form).to(device)
        conv.load_state_dict(ref.state_dict())

        def fwd():
            with torch.no_grad():
                conv(x)

        def fwd_bwd():
            conv.zero_grad(set_to_none=True)
            conv(x).square().mean().backward()

        out[f"{form}_forward_s"] = _median_seconds(fwd, repeats, device)
        out[f"{form}_train_s"] = _median_seconds(fwd_bwd, repeats, device)
    return out


def bench_model(width, kernel_sizes, size, batch, repeats, device):
    out = {}
    x = torch.randn(batch, 1, size, size, size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    for form in ("dense", "shells"):
        torch.manual_seed(0)
        model = create_model("gmr", num_classes=2, width=width, kernel_sizes=kernel_sizes, conv_form=form).to(device)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        out[f"{form}_train_step_s"] = _median_seconds(step, repeats, device)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--kernel-sizes", type=int, nargs=4, default=[7, 7, 5, 5])
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-model", action="store_true", help="time single layers only")
    args = p.parse_args()
    device = torch.device(args.device)
    result = {
        "benchmark": "gmr_forms",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "load_average_1min": os.getloadavg()[0],
        "width": args.width,
        "kernel_sizes": args.kernel_sizes,
        "size": args.size,
        "batch": args.batch,
        "repeats": args.repeats,
        "layers": [
            bench_layer(*shape, args.batch, args.repeats, device)
            for shape in layer_shapes(args.width, args.kernel_sizes, args.size)
        ],
    }
    if not args.skip_model:
        result["model"] = bench_model(args.width, args.kernel_sizes, args.size, args.batch, args.repeats, device)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
