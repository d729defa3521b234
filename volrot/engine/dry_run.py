"""`volrot train --dry-run`: the effective recipe and the model's size, nothing trained or written.

The dataset is opened (it tells the number of classes and input channels the model is built
for) with `data.cache_dir` and `data.download` switched off, so nothing is written anywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from volrot.config import Recipe


@dataclass
class DryRun:
    recipe: Recipe
    parameters: int
    num_classes: int
    input_shape: list[int]
    split_sizes: dict[str, int]
    run_dir: str  # where `volrot train` would write (a pattern when the name has a timestamp)


def dry_run(recipe: Recipe) -> DryRun:
    """Open the data and build the model of `recipe`; write nothing."""
    from volrot.data import load_data
    from volrot.models import count_parameters, create_model

    data_cfg = dataclasses.replace(recipe.data, cache_dir=None, download=False)
    bundle = load_data(data_cfg)
    model = create_model(
        recipe.model.arch, num_classes=bundle.num_classes, in_channels=bundle.in_channels, **recipe.model.options
    )
    t = recipe.train
    name = t.name or f"{recipe.model.arch}-{bundle.name.split(':')[0]}-<YYYYmmdd-HHMMSS>"
    return DryRun(
        recipe=recipe,
        parameters=count_parameters(model),
        num_classes=bundle.num_classes,
        input_shape=[bundle.in_channels, *bundle.input_size],
        split_sizes={"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)},
        run_dir=str(Path(t.out) / name),
    )


def print_plan(plan: DryRun, console) -> None:
    console.print(plan.recipe.to_yaml().rstrip(), highlight=False, markup=False)
    sizes = ", ".join(f"{k} {v}" for k, v in plan.split_sizes.items())
    console.print(
        f"# parameters: {plan.parameters:,}  classes: {plan.num_classes}  input: {tuple(plan.input_shape)}  "
        f"volumes: {sizes}",
        highlight=False,
    )
    console.print(f"# dry run: nothing trained or written (a run would write to {plan.run_dir})", highlight=False)
