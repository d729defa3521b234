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

**Size limit.** Options come from recipes, `--set` and checkpoint metadata, none of them trusted.
Before a model is built, `estimate_model_elements` runs the builder once with every tensor
factory call asking for more than `_DRY_RUN_THRESHOLD` elements redirected to torch's `meta`
device (no memory), and counts the parameters and buffers of the result. Above
`MAX_MODEL_ELEMENTS` (2^30 values, 4 GiB as float32) `create_model` refuses with a `UserError`.
The dry run needs no arch code: small tensors (bases, lattices) are real, so builders that compute
with them still work. When nothing was redirected the dry-run model *is* the model; otherwise
the RNG state is restored and the model is built for real, so weights equal a direct build.
The CLI never knows model internals: it only passes recipe `model.*` keys through here.
"""

from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from volrot.errors import UserError
from volrot.models.catalog import check_known_options
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
    check_known_options(entry.name, options, entry.defaults)
    return entry


#: Most parameter + buffer values a model may have (2^30: 4 GiB as float32; the largest shipped
#: recipe, resnet3d width 64, has 3.3e7). Checked before anything large is allocated.
MAX_MODEL_ELEMENTS = 2**30
_DRY_RUN_THRESHOLD = 2**16  # factory calls above this many elements go to the meta device
_SIZED = {"empty", "zeros", "ones", "full", "rand", "randn", "empty_strided", "empty_permuted"}


def _device_constructors() -> set:
    """The tensor factory functions that take a `device` (what `with torch.device(...)` redirects)."""
    try:
        from torch.utils._device import _device_constructors as constructors  # torch's own list

        return set(constructors())
    except ImportError:  # a private helper: fall back to the sized factories
        return {getattr(torch, name) for name in _SIZED if hasattr(torch, name)}


def _requested(func, args, kwargs) -> int:
    """Elements a sized tensor factory call asks for (0 when it cannot be read from the call)."""
    if getattr(func, "__name__", "") not in _SIZED:
        return 0
    size = kwargs.get("size")
    if size is None and args:
        size = args[0] if isinstance(args[0], (tuple, list, torch.Size)) else [a for a in args if isinstance(a, int)]
    try:
        return math.prod(int(s) for s in size) if size is not None else 0
    except (TypeError, ValueError):
        return 0


class _DryRun(TorchFunctionMode):
    """Redirect large tensor factory calls to the meta device; count what was asked for."""

    def __init__(self, threshold: int):
        super().__init__()
        self.threshold = threshold
        self.requested = 0
        self.redirected = False
        self._constructors = _device_constructors()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._constructors:
            n = _requested(func, args, kwargs)
            self.requested += n
            if n > self.threshold and kwargs.get("device") is None:
                kwargs["device"] = "meta"
                self.redirected = True
        return func(*args, **kwargs)


def model_elements(model: nn.Module) -> int:
    """Parameter and buffer values of `model` (meta tensors included)."""
    return sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())


def _refuse_size(name: str, n: int, config: dict[str, Any]) -> None:
    opts = ", ".join(f"{k}={v}" for k, v in config.items() if k not in _RESERVED)
    raise UserError(
        f"arch '{name}' with {opts or 'its defaults'} would have {n:.3g} parameter/buffer values, "
        f"more than the limit {MAX_MODEL_ELEMENTS:.3g} ({MAX_MODEL_ELEMENTS * 4 / 2**30:.0f} GiB as float32); refusing to build it"
    )


def _dry_build(entry: ModelEntry, kwargs: dict[str, Any]) -> tuple[nn.Module | None, int | None, bool]:
    """(model, elements, redirected) from a dry run; model is None when the dry run failed."""
    mode = _DryRun(_DRY_RUN_THRESHOLD)
    try:
        with mode:
            model = entry.builder(**kwargs)
    except UserError:
        raise
    except Exception:
        if mode.requested > MAX_MODEL_ELEMENTS:
            _refuse_size(entry.name, mode.requested, kwargs)
        return None, None, True
    return model, model_elements(model), mode.redirected


def estimate_model_elements(name: str, *, num_classes: int, in_channels: int = 1, **cfg: Any) -> int | None:
    """Parameter + buffer values the model would have, found without allocating large tensors
    (None when the builder cannot run its dry run); see the module doc."""
    entry = check_model_options(name, cfg)
    kwargs = {"num_classes": int(num_classes), "in_channels": int(in_channels), **entry.defaults, **cfg}
    state = _rng_state()
    try:
        return _dry_build(entry, kwargs)[1]
    finally:
        _set_rng_state(state)


def _rng_state():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state(state) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def _check_option_types(entry: ModelEntry, cfg: dict[str, Any]) -> None:
    """Each option must have its default's type (an int where the default is an int: `width: 2.5`
    is an error, not silently width 2); options whose default is None are not checked."""
    for key, value in cfg.items():
        default = entry.defaults.get(key)
        if default is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = number and isinstance(value, int), "an integer"
        elif isinstance(default, float):
            ok, kind = number, "a number"
        elif isinstance(default, (list, tuple)):
            ok, kind = isinstance(value, (list, tuple)), "a list"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise UserError(f"model.{key} of arch '{entry.name}' must be {kind}, got {value!r}")


def create_model(name: str, *, num_classes: int, in_channels: int = 1, **cfg: Any) -> nn.Module:
    """Build a registered architecture. Unknown options are a `UserError` naming the key; a
    model above `MAX_MODEL_ELEMENTS` is refused before it is allocated."""
    entry = check_model_options(name, cfg)
    _check_option_types(entry, cfg)
    config = {**entry.defaults, **cfg}
    kwargs = {"num_classes": int(num_classes), "in_channels": int(in_channels), **config}
    for key in _RESERVED:
        if kwargs[key] < 1:
            raise UserError(f"{key} must be at least 1, got {kwargs[key]}")
    state = _rng_state()
    model, n, redirected = _dry_build(entry, kwargs)
    if n is not None and n > MAX_MODEL_ELEMENTS:
        _set_rng_state(state)
        _refuse_size(name, n, kwargs)
    if model is None or redirected:
        _set_rng_state(state)
        budget = _Budget(MAX_MODEL_ELEMENTS if n is None else None, name, kwargs)
        with budget:
            model = entry.builder(**kwargs)
    model.volrot_arch = name
    model.volrot_config = {"num_classes": int(num_classes), "in_channels": int(in_channels), **config}
    model.volrot_symmetry = entry.symmetry(**config)
    return model


def symmetry_of(model: nn.Module) -> Symmetry:
    """The symmetry declared for a model built by `create_model` (or loaded from a checkpoint);
    no symmetry for any other module."""
    return getattr(model, "volrot_symmetry", NO_SYMMETRY)
class _Budget(TorchFunctionMode):
    """When the dry run could not size a model: refuse once its factory calls ask for more than
    `limit` values in total (None: no limit)."""

    def __init__(self, limit: int | None, name: str, kwargs: dict[str, Any]):
        super().__init__()
        self.limit, self.name, self.kwargs, self.requested = limit, name, kwargs, 0
        self._constructors = _device_constructors()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.limit is not None and func in self._constructors:
            self.requested += _requested(func, args, kwargs)
            if self.requested > self.limit:
                _refuse_size(self.name, self.requested, self.kwargs)
        return func(*args, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
