"""Checks of a training recipe that need no torch: run before the heavy imports.

`volrot train` refuses a typo (recipe key, arch option, device, augmentation, dataset name,
missing data path, thread count) in well under a second this way, instead of after importing
torch and e3nn (tens of seconds on a busy machine). The same checks run again where the values
are used; these only make the common mistakes fast.
"""

from __future__ import annotations

from pathlib import Path

from volrot.config import Recipe, canonical_name, check_values, validate_model_options
from volrot.device import check_device_name, check_threads
from volrot.errors import UserError

#: Must equal volrot.engine.augment.AUGMENTATIONS and volrot.data.medmnist.SHORT_NAMES (tested).
AUGMENTATIONS = ("none", "so3", "octahedral", "resample")
MEDMNIST_NAMES = ("organ", "nodule", "adrenal", "fracture", "vessel", "synapse")


def check_data_name(name: str) -> None:
    low = name.strip().lower()
    kind = canonical_name(name)
    if kind in ("nifti", "dicom"):
        path = name.strip().split(":", 1)[1]
        if path and not Path(path).expanduser().exists():
            raise UserError(f"--data {kind}:{path}: {path} does not exist")
        return
    if low == "shapes" or kind in MEDMNIST_NAMES:
        return
    known = ", ".join(("shapes", *MEDMNIST_NAMES, "nifti:PATH", "dicom:PATH"))
    raise UserError(f"unknown dataset '{name}' (known: {known})")


def check_recipe(recipe: Recipe) -> None:
    """`UserError` on the first value of `recipe` that cannot work; imports no torch."""
    validate_model_options(recipe)
    t = recipe.train
    check_device_name(t.device)
    check_threads(t.threads)
    if t.augment not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation '{t.augment}' (choose from: {', '.join(AUGMENTATIONS)})")
    check_values(recipe)  # ranges (also checked when the recipe is read; a Recipe can be edited since)
    check_data_name(recipe.data.name)
