"""Model zoo. Each architecture is one module that registers itself by name."""

from volrot.models.registry import (
    check_model_options,
    count_parameters,
    create_model,
    get_entry,
    list_models,
    model_defaults,
    register_model,
    symmetry_of,
)

# Built-in architectures: importing a module registers it.
from volrot.models import resnet3d  # noqa: E402,F401
from volrot.models import equilopo  # noqa: E402,F401
from volrot.models import gcnn  # noqa: E402,F401
from volrot.models import gmr  # noqa: E402,F401
from volrot.models import steerable  # noqa: E402,F401

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
