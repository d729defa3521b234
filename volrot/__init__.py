"""volrot: rotation-robust classifiers of 3D volumes, and proof of how robust they are."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "UserError", "create_model", "list_models", "load_model"]

from volrot.errors import UserError


def __getattr__(name: str):
    # Lazy imports keep `import volrot` (and `volrot --help`) fast.
    if name in ("create_model", "list_models"):
        from volrot import models

        return getattr(models, name)
    if name == "load_model":
        from volrot.inference.predict import load_model

        return load_model
    raise AttributeError(f"module 'volrot' has no attribute {name!r}")
