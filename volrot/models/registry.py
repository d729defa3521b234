"""Model registry: name -> builder (in the style of timm's registry).

An architecture registers a builder function whose keyword-only arguments (with defaults) are
its configuration options::

    @register_model("gcnn", description="...", symmetry=lambda group, **_: Symmetry(group, cube_group(group)))
    def gcnn(*, num_classes: int, in_channels: int = 1, group: str = "O", width: int = 16):
        ...

`symmetry` declares, as a function of the options (the builder's keyword arguments), what the
logits are invariant to (`volrot.so3.groups.Symmetry`: the exact cube subgroup, and whether it
is built for every rotation); it defaults to no symmetry. A model whose layers are equivariant
also lists them with their field laws: `model.equivariant_layers()` -> [(name, module,
`volrot.so3.fields.Field`)]. The shared tests (`tests/test_models.py`) check both for every
registered arch, so a new arch gets them by registering.

`create_model(name, num_classes=2, in_channels=1, width=8)` validates the option names
(an unknown one is a `UserError`, exit 2 from the CLI) and records the effective config on the
module as `model.volrot_arch` / `model.volrot_config` (so checkpoints can rebuild it) and the
declared symmetry as `model.volrot_symmetry` (`symmetry_of(model)`).
The CLI never knows model internals: it only passes recipe `model.*` keys through here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from volrot.errors import UserError
from volrot.so3.groups import NO_SYMMETRY, Symmetry


def _no_symmetry(**_options: Any) -> Symmetry:
    return NO_SYMMETRY


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    symmetry: Callable[..., Symmetry]
    defaults: dict[str, Any] = field(default_factory=dict)

    def symmetry_of(self, options: dict[str, Any] | None = None) -> Symmetry:
        """The declared symmetry for `options` (missing ones take their defaults)."""
        return self.symmetry(**{**self.defaults, **(options or {})})


_REGISTRY: dict[str, ModelEntry] = {}
_RESERVED = ("num_classes", "in_channels")


def register_model(name: str, *, description: str, symmetry: Callable[..., Symmetry] = _no_symmetry):
    """Decorator registering `builder` under `name`; `symmetry(**options)` declares the
    symmetry of the model built with those options."""
    if not callable(symmetry):
        raise TypeError(f"symmetry of {name!r} must be a function of the options returning a Symmetry")

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


def _ensure_builtin_models() -> None:
    # Importing the package modules registers the built-in architectures.
    import volrot.models  # noqa: F401


def get_entry(name: str) -> ModelEntry:
    _ensure_builtin_models()
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
    model.volrot_symmetry = entry.symmetry(**config)
    return model


def symmetry_of(model: nn.Module) -> Symmetry:
    """The symmetry declared for a model built by `create_model` (or loaded from a checkpoint);
    no symmetry for any other module."""
    return getattr(model, "volrot_symmetry", NO_SYMMETRY)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
