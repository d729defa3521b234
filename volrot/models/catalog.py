"""The built-in architectures as a plain table: names, options and defaults, without torch.

The CLI checks `--arch` and `model.*` recipe keys against this table before anything heavy is
imported, and `volrot models` prints it; a model module (torch, e3nn) is imported only when its
model is built. Each module still registers its builder with `volrot.models.registry`, and a
test checks that this table and the registry agree entry by entry.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from volrot.errors import UserError


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    module: str  # the module whose import registers the builder
    description: str
    symmetry_text: str  # the declared symmetry at the default options, as `volrot models` shows it
    defaults: dict[str, Any] = field(default_factory=dict)


BUILTIN: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            "equilopo",
            "volrot.models.equilopo",
            "EquiLoPO ResNet: SO(3)-Fourier group convs, local polynomial ReLU on SO(3), invariant logits",
            "SO(3) (exact: O, 24 grid elements)",
            {"blocks": 8, "activation": "local", "channels": 4, "lmax": 1, "filter_lmax": 2,
             "coefficients": "adaptive", "dropout": 0.0, "head": "softmax", "head_norm": False,
             "lift_lmax": None, "init_pool": False},  # fmt: skip
        ),
        CatalogEntry(
            "gcnn",
            "volrot.models.gcnn",
            "Regular 3D group-conv CNN (Winkels & Cohen) on O/Oh/D4/D4h; invariant to its group",
            "O (exact: O, 24 grid elements)",
            {"group": "O", "width": 16, "width_mode": "params", "kernel_size": 3},
        ),
        CatalogEntry(
            "gmr",
            "volrot.models.gmr",
            "GMR-Conv 3D ResNet-18 (radial Gaussian-shell kernels); exactly invariant to the 48 grid symmetries",
            "Oh (exact: Oh, 48 grid elements)",
            {"width": 16, "kernel_sizes": (7, 7, 5, 5), "conv_form": "dense"},
        ),
        CatalogEntry(
            "resnet3d",
            "volrot.models.resnet3d",
            "Plain 3D ResNet-18/34/50 (MedMNIST3D baseline); no built-in rotation symmetry",
            "none",
            {"width": 64, "depth": 18},
        ),
        CatalogEntry(
            "steerable",
            "volrot.models.steerable",
            "3D steerable CNN (Weiler et al. 2018) on e3nn irreps: gated, band-limited, blur-pooled; SO(3)-equivariant",
            "SO(3) (exact: O, 24 grid elements)",
            {"width": 8, "lmax": 2, "blocks": 1, "kernel_size": 5, "pooling": "blur", "reflections": False,
             "dropout": 0.0},  # fmt: skip
        ),
    )
}


def catalog_names() -> list[str]:
    """Built-in architectures, plus any registered in this process (plugins), sorted."""
    names = set(BUILTIN)
    registry = sys.modules.get("volrot.models.registry")
    if registry is not None:
        names |= set(registry._REGISTRY)
    return sorted(names)


def catalog_entry(name: str) -> CatalogEntry:
    """The table entry for `name` (also for a plugin registered in this process); `UserError` if unknown."""
    if name in BUILTIN:
        return BUILTIN[name]
    registry = sys.modules.get("volrot.models.registry")
    if registry is not None and name in registry._REGISTRY:
        e = registry._REGISTRY[name]
        return CatalogEntry(name, e.builder.__module__, e.description, e.symmetry_of().describe(), dict(e.defaults))
    raise UserError(f"unknown arch '{name}' (available: {', '.join(catalog_names())})")


def check_options(name: str, options) -> None:
    """A `UserError` naming an unknown arch or the first option it does not have (no torch)."""
    entry = catalog_entry(name)
    check_known_options(entry.name, options, entry.defaults)


def check_known_options(arch: str, options, defaults) -> None:
    """A `UserError` naming the first of `options` that is not a key of the arch's `defaults`
    (the one message for the catalog and the registry)."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise UserError(f"unknown recipe key 'model.{unknown[0]}' for arch '{arch}' (options: {known})")
