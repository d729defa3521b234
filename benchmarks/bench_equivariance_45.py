"""Per-layer equivariance error of every arch under a rotation that needs resampling (45° about
z), through `volrot.inspection.equivariance.measure_equivariance_resampled`. JSON and a
markdown table out.

    python benchmarks/bench_equivariance_45.py --size 16 --volumes 4 \
        --checkpoint resnet3d=runs/resnet3d-none/best.safetensors --out benchmarks/results/equivariance_45.json

Models: the small configurations below, untrained (seeded) unless `--checkpoint ARCH=PATH`
gives a trained one. Inputs: the first `--volumes` shapes test volumes (noise-free when
`--clean`). Per layer, averaged over the volumes: `rel` = ‖F(R·x) − T_R F(x)‖ / ‖T_R F(x)‖
inside the feature grid's inscribed sphere (n/a for regular G-CNN fields: R is not in the
group), `inv` = the same for the invariant pooled maps, `floor` = the loss of resampling that
feature map by R and back. Grids of 2³ have no voxel inside the sphere and are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from volrot.data.synthetic import PoseRenderer  # noqa: E402
from volrot.inspection.equivariance import measure_equivariance_resampled, z45  # noqa: E402
from volrot.models import create_model  # noqa: E402

CONFIGS = {
    "resnet3d": {"width": 4},
    "gcnn": {"width": 8},
    "steerable": {"width": 4, "lmax": 1},
    "gmr": {"width": 4},
    "equilopo": {"blocks": 1, "channels": 4},
}


def _model(arch: str, checkpoint: str | None):
    if checkpoint:
        from volrot.artifacts.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint, device="cpu")[0], "trained"
    torch.manual_seed(0)
    return create_model(arch, num_classes=8, in_channels=1, **CONFIGS[arch]), "untrained"


def measure(arch: str, model, volumes: torch.Tensor, resample: str) -> dict:
    runs = [measure_equivariance_resampled(model, v, z45(), resample=resample) for v in volumes]
    layers = []
    for i, layer in enumerate(runs[0].layers):
        rel = [r.layers[i].rel_error for r in runs]
        layers.append({
            "name": layer.name, "type": layer.module_type, "fiber": layer.fiber, "grid": layer.shape[-1],
            "rel": None if rel[0] is None else float(np.mean(rel)),
            "inv": float(np.mean([r.layers[i].invariant_rel_error for r in runs])),
            "floor": float(np.mean([r.layers[i].floor_rel_error for r in runs])),
        })  # fmt: skip
    return {
        "arch": arch,
        "logits_rel": float(np.mean([r.logits_rel_error for r in runs])),
        "input_floor": float(np.mean([r.input_floor_rel_error for r in runs])),
        "layers": layers,
    }


def _f(v):
    return "n/a" if v is None else f"{v:.3f}"


def markdown(res: dict) -> str:
    lines = [f"**{res['arch']}** ({res['state']}, {res['resample']}): logits {res['logits_rel']:.3f}, "
             f"input round trip {res['input_floor']:.3f}", "",
             "| layer | grid | rel | inv | floor |", "|---|---|---|---|---|"]  # fmt: skip
    for layer in res["layers"]:
        lines.append(f"| {layer['name']} | {layer['grid']}³ | {_f(layer['rel'])} | {_f(layer['inv'])} | {_f(layer['floor'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--clean", action="store_true", help="noise-free volumes")
    ap.add_argument("--resample", nargs="+", default=["trilinear"])
    ap.add_argument("--checkpoint", action="append", default=[], help="ARCH=PATH of a trained model (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="-")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    volumes = torch.from_numpy(PoseRenderer("test", 0, args.size, args.volumes).render(range(args.volumes), noise=not args.clean))
    results = []
    for arch in args.archs:
        model, state = _model(arch, ckpts.get(arch))
        for resample in args.resample:
            res = {**measure(arch, model, volumes, resample), "state": state, "resample": resample}
            results.append(res)
            print(markdown(res) + "\n", flush=True)
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        payload = {"size": args.size, "volumes": args.volumes, "clean": args.clean, "rotation": "45 deg about z", "results": results}
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
