"""Checkpoints: one safetensors file = weights + JSON metadata. Loading never unpickles.

Metadata (under the safetensors header key ``volrot``) holds: format and version, volrot and
torch versions, arch and its config, class names, input spec, dataset description and
preprocessing, the training recipe, metrics and epoch. Writes are atomic (temp file, fsync,
rename), so an interrupted write never leaves a truncated checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from volrot.errors import UserError
from volrot.fileio import atomic_write, atomic_write_text  # noqa: F401  (re-exported)

FORMAT = "volrot-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "volrot"


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    header = {_META_KEY: json.dumps(meta, sort_keys=True, allow_nan=True)}
    atomic_write(path, lambda tmp: save_file(_tensors(tensors), tmp, metadata=header))


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a volrot safetensors file; a non-safetensors file is a `UserError` (never unpickled)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise UserError(f"{p}: not a volrot checkpoint (not a valid safetensors file: {type(e).__name__})") from None
    if _META_KEY not in header:
        raise UserError(f"{p}: not a volrot checkpoint (safetensors file without volrot metadata)")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError:
        raise UserError(f"{p}: corrupt volrot metadata") from None
    if meta.get("format") not in (FORMAT, FORMAT + "-train-state"):
        raise UserError(f"{p}: not a volrot checkpoint (format {meta.get('format')!r})")
    return tensors, meta


def checkpoint_metadata(model: nn.Module, **extra: Any) -> dict[str, Any]:
    import volrot

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "volrot_version": volrot.__version__,
        "torch_version": torch.__version__,
        "arch": model.volrot_arch,
        "model_config": model.volrot_config,
        **extra,
    }


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Save weights (state dict incl. buffers) with `meta` (see `checkpoint_metadata`)."""
    save_tensors(Path(path), model.state_dict(), meta)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model recorded in a checkpoint, load its weights; return it in eval mode with
    the checkpoint's metadata. (`volrot.load_model` wraps this in a `Predictor` for inference.)"""
    from volrot.models import create_model

    tensors, meta = read_tensors(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: a training-state file, not a model checkpoint (use best.safetensors)")
    config = dict(meta["model_config"])
    model = create_model(
        meta["arch"], num_classes=config.pop("num_classes"), in_channels=config.pop("in_channels"), **config
    )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not match arch '{meta['arch']}' "
            f"(missing {len(missing)}, unexpected {len(unexpected)}; e.g. {(missing or unexpected)[0]})"
        )
    return model.to(device).eval(), meta
