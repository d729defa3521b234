"""CPU time of one training step per architecture, at each arch's recipe width. Prints JSON.

For every arch named on the command line (default: every registered arch that has a recipe
`volrot/recipes/<arch>_<dataset>.yaml`), builds the model with the recipe's
`model:` options (registry defaults where there is no recipe), then times
`zero_grad -> forward -> cross-entropy -> backward -> Adam step` on a random batch
(default batch 4, 28³, 2 classes, 1 input channel) with `volrot.benchmark.time_calls`. Reports
the parameter count, the forward multiply-adds per sample and the median (min, max) step time
over `--repeats` steps after `--warmup` steps.

    python benchmarks/bench_train_step_cpu.py                    # all archs with an adrenal recipe
    python benchmarks/bench_train_step_cpu.py gcnn gmr --repeats 5
    python benchmarks/bench_train_step_cpu.py gcnn --set group=Oh   # options applied to every arch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import torch
import yaml

from volrot.benchmark import Timing, forward_flops, make_steps, time_calls
from volrot.config import find_recipe, load_recipe_file
from volrot.models import count_parameters, create_model, list_models


def recipe_options(arch: str, dataset: str) -> tuple[dict[str, Any], str | None]:
    """The `model:` options of the shipped recipe for (arch, dataset), minus `arch`."""
    path = find_recipe(arch, dataset)
    if path is None:
        return {}, None
    model = dict(load_recipe_file(path).get("model", {}))
    model.pop("arch", None)
    return model, path.name


def forward_gmacs(model, size: int) -> float:
    """Multiply-accumulates (10⁹) of one forward pass of one sample, counted by torch."""
    return forward_flops(model, torch.randn(1, 1, size, size, size)) / 2e9


def time_train_step(model, batch: int, size: int, num_classes: int, warmup: int, repeats: int) -> Timing:
    x = torch.randn(batch, 1, size, size, size)
    y = torch.randint(0, num_classes, (batch,))
    _, step = make_steps(model, x, y, amp=False)
    model.train()
    return time_calls(step, repeats=repeats, warmup=warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archs", nargs="*", help="registered arch names (default: those with a recipe)")
    p.add_argument("--dataset", default="adrenal", help="recipe to take the model options from")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model option override applied to every arch (YAML value)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    archs = args.archs or [a for a in list_models() if find_recipe(a, args.dataset) is not None]
    overrides = {}
    for item in args.overrides:
        key, _, text = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(text)
    results = []
    for arch in archs:
        options, recipe = recipe_options(arch, args.dataset)
        options.update(overrides)
        torch.manual_seed(0)
        model = create_model(arch, num_classes=args.num_classes, in_channels=1, **options)
        gmacs = forward_gmacs(model, args.size)
        timing = time_train_step(model, args.batch, args.size, args.num_classes, args.warmup, args.repeats)
        results.append({
            "arch": arch,
            "recipe": recipe,
            "options": options,
            "parameters": count_parameters(model),
            "forward_gmac_per_sample": round(gmacs, 3),
            "step_s_median": timing.median,
            "step_s_min": timing.min,
            "step_s_max": timing.max,
            "step_s_all": timing.samples,
        })
    print(json.dumps({
        "benchmark": "train_step_cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "load_average_1min": os.getloadavg()[0],  # the timings are only as quiet as the machine
        "batch": args.batch,
        "size": args.size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
