"""Model registry: name -> builder (in the style of timm's registry).

An architecture registers a builder function whose keyword-only arguments (with defaults) are
its configuration options::

    @register_model("resnet3d", description="...", symmetry="none")
    def resnet3d(*, num_classes: int, in_channels: int = 1, width: int = 64, depth: int = 18):
        ...

`create_model(name, num_classes=2, in_channels=1, width=8)` validates the option names
(an unknown one is a `UserError`, exit 2 from the CLI) and records the effective config on the
module as `model.volrot_arch` / `model.volrot_config`, so checkpoints can rebuild it.
The CLI never knows model internals: it only passes recipe `model.*` keys through here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from volrot.errors import UserError

#: Symmetry a model has by construction; tests use it to pick invariance checks.
SYMMETRIES = ("none", "octahedral", "octahedral+reflections", "so3")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    symmetry: str
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}
_RESERVED = ("num_classes", "in_channels")


def register_model(name: str, *, description: str, symmetry: str = "none"):
    """Decorator registering `builder` under `name`."""
    if symmetry not in SYMMETRIES:
        raise ValueError(f"symmetry must be one of {SYMMETRIES}, got {symmetry!r}")

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        sig = inspect.signature(builder)
        for reserved in _RESERVED:
            if reserved not in sig.parameters:
                raise TypeError(f"builder {builder.__name__} must accept {reserved!r}")
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in _RESERVED and p.default is not inspect.Parameter.empty
        }
        _REGISTRY[name] = ModelEntry(name, builder, description, symmetry, defaults)
        return builder

    return deco


def _ensure_builtin_models(name: str | None = None) -> None:
    """Import the module(s) that register the built-in architectures: only `name`'s when given."""
    import importlib

    from volrot.models.catalog import BUILTIN

    if name is not None and name in _REGISTRY:
        return
    entries = [BUILTIN[name]] if name in BUILTIN else BUILTIN.values()
    for entry in entries:
        importlib.import_module(entry.module)


def get_entry(name: str) -> ModelEntry:
    _ensure_builtin_models(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown arch '{name}' (available: {', '.join(sorted(_REGISTRY))})"
        ) from None


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    _ensure_builtin_models()
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict[str, Any]:
    """The configuration options of an architecture and their default values."""
    return dict(get_entry(name).defaults)


def check_model_options(name: str, options) -> ModelEntry:
    """The arch's entry; a `UserError` naming the first option it does not have."""
    entry = get_entry(name)
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        known = ", ".join(sorted(entry.defaults)) or "none"
        raise UserError(f"unknown recipe key 'model.{unknown[0]}' for arch '{entry.name}' (options: {known})")
    return entry


def create_model(name: str, *, num_classes: int, in_channels: int = 1, **cfg: Any) -> nn.Module:
    """Build a registered architecture. Unknown options are a `UserError` naming the key."""
    entry = check_model_options(name, cfg)
    config = {**entry.defaults, **cfg}
    model = entry.builder(num_classes=int(num_classes), in_channels=int(in_channels), **config)
    model.volrot_arch = name
    model.volrot_config = {"num_classes": int(num_classes), "in_channels": int(in_channels), **config}
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
