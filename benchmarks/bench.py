"""One measurement of one arch against resnet3d in the same process; JSON out.

Measures inference s/batch, training s/step (median, min, max after warm-up), peak memory, the
FLOPs of one forward, the parameter count and, for equivariant archs, the invariance error under
the 24 grid rotations in the run's precision; then the same for `resnet3d` (recipe width 64
unless `--reference-width`) and the ratios. See `volrot/benchmark.py` for what each figure
measures. Writes `benchmarks/results/<arch>_<hardware>_b<batch>_s<size>[...].json` unless
`--out` says otherwise (`--out -` prints only).

    # CPU, the 1-block EquiLoPO at batch 4, 28³ (several minutes on a 2-core machine)
    python benchmarks/bench.py equilopo --set blocks=1 --batch 4 --size 28 --repeats 3 --threads 1
    # the paper configuration on a GPU, inference batch 32 and training batch 16
    python benchmarks/bench.py equilopo --device cuda --batch 32 --size 28 --repeats 20 --warmup 5
    # render the README table from every result file
    python benchmarks/render_table.py benchmarks/results/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from volrot.benchmark import default_result_path, run_benchmark, write_report  # noqa: E402


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(text)
    return out


def recipe_model_options(arch: str, dataset: str) -> dict:
    """The `model:` options of `volrot/recipes/<arch>_<dataset>.yaml` (empty when there is none)."""
    from volrot.config import find_recipe, load_recipe_file

    path = find_recipe(arch, dataset)
    if path is None:
        return {}
    options = dict(load_recipe_file(path).get("model", {}))
    options.pop("arch", None)
    return options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arch", help="registered arch to measure (resnet3d is measured too, always)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="model option (YAML value), over the recipe's")
    p.add_argument("--recipe-dataset", default="adrenal",
                   help="take the arch's options from volrot/recipes/<arch>_<this>.yaml ('none': registry defaults)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--train-batch", type=int, default=None,
                   help="measure training at this batch in a second pass (default: --batch)")
    p.add_argument("--size", type=int, default=28, help="volume edge (size³ voxels)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (the invariance error is measured in it)")
    p.add_argument("--compile", action="store_true", help="time torch.compile(model) (compiled during warm-up)")
    p.add_argument("--reference-width", type=int, default=None, help="resnet3d width (default: recipe width 64)")
    p.add_argument("--invariance-samples", type=int, default=2, help="volumes for the check under the declared group (0: skip)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (on a loaded shared CPU, 1 avoids OpenMP stalls)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmul/cuDNN on CUDA (off by default)")
    p.add_argument("--out", default=None, help="JSON path; default benchmarks/results/<name>.json; '-' prints only")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        # fp32 means fp32: cuDNN's TF32 default would change the precision of every conv
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    options = {} if args.recipe_dataset == "none" else recipe_model_options(args.arch, args.recipe_dataset)
    options.update(parse_sets(args.sets))
    common = dict(device=args.device, size=args.size, repeats=args.repeats, warmup=args.warmup, amp=args.amp,
                  reference_width=args.reference_width, invariance_samples=args.invariance_samples,
                  compile=args.compile)
    report = run_benchmark(args.arch, options, batch=args.batch, **common)
    if args.train_batch and args.train_batch != args.batch:
        # the authors report inference at 32 and training at 16: a second run at the training batch
        report["train_batch_run"] = run_benchmark(args.arch, options, batch=args.train_batch, **{**common, "invariance_samples": 0})
    text = json.dumps(report, indent=2)
    print(text)
    if args.out != "-":
        path = write_report(report, args.out or default_result_path(report, REPO / "benchmarks" / "results"))
        print(f"wrote {path}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
