"""Model zoo. Each architecture is one module that registers itself by name.

Importing this package is cheap: the registry (torch) and the model modules (torch, e3nn) load
on first use of `create_model` & co., and `create_model("resnet3d", ...)` imports only the
resnet3d module. `volrot.models.catalog` lists the built-in archs and options without torch.
"""

from __future__ import annotations

__all__ = [
    "check_model_options",
    "count_parameters",
    "create_model",
    "get_entry",
    "list_models",
    "model_defaults",
    "register_model",
    "symmetry_of",
]


def __getattr__(name: str):
    if name in __all__:
        from volrot.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'volrot.models' has no attribute {name!r}")
