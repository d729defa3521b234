"""Checkpoints: one safetensors file = weights + the model card. Loading never unpickles.

The card (`volrot.artifacts.card.ModelCard`, JSON under the safetensors header key ``volrot``)
holds arch and options, class names, input spec, executable preprocessing, the training recipe,
metrics, epoch and versions. Writes are atomic (temp file, fsync, rename), so an interrupted
write never leaves a truncated checkpoint.

`load_checkpoint` trusts nothing the file says about itself: the card is validated when the
header is read (before any tensor), the model's size is bounded before it is built
(`volrot.models.registry.MAX_MODEL_ELEMENTS`), every tensor's name, shape and dtype in the header
must match the model built from the card before the weights are read, and weights holding NaN or
infinity are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from volrot.artifacts.card import CHECKPOINT, ModelCard, data_description
from volrot.errors import UserError
from volrot.fileio import atomic_write

FORMAT = CHECKPOINT
FORMAT_VERSION = 2  # the model card's schema version (1: volrot 0.1, converted on load)
_META_KEY = "volrot"
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    header = {_META_KEY: json.dumps(meta, sort_keys=True, allow_nan=True)}
    blob = save(_tensors(tensors), metadata=header)  # bytes, written by Python: disk full is an OSError
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))


def _utf8_name(p: Path) -> bool:
    try:
        os.fsencode(p).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensor entries, volrot metadata) from a safetensors header, read with the standard
    library only: no tensor is read. A file that is not safetensors is a `UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            size = os.fstat(f.fileno()).st_size
            if not 2 <= n <= min(_MAX_HEADER, size - 8):
                raise ValueError("bad header length")
            header = json.loads(f.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        if isinstance(e, OSError) and not isinstance(e, (IsADirectoryError, FileNotFoundError)):
            raise UserError(f"{p}: cannot read the checkpoint ({e.strerror or type(e).__name__})") from None
        raise UserError(f"{p}: not a volrot checkpoint (not a valid safetensors file)") from None
    extra = header.pop("__metadata__", None) or {}
    if not isinstance(extra, dict) or _META_KEY not in extra:
        raise UserError(f"{p}: not a volrot checkpoint (safetensors file without volrot metadata)")
    try:
        meta = json.loads(extra[_META_KEY])
    except (TypeError, json.JSONDecodeError, RecursionError):
        raise UserError(f"{p}: corrupt volrot metadata") from None
    return header, meta


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], Any]:
    """Read a volrot safetensors file (checkpoint or training state): its tensors and its raw
    volrot metadata. A non-safetensors file is a `UserError` (never unpickled). Model checkpoints
    are read with `load_checkpoint`, which validates the card."""
    p = Path(path)
    _, meta = read_header(p)
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, FORMAT + "-train-state"):
        found = meta.get("format") if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
        raise UserError(f"{p}: not a volrot checkpoint (format {found!r})")
    return _read_all(p), meta


def _read_all(p: Path, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (file names that are not UTF-8 are read through memory)."""
    from safetensors import safe_open
    from safetensors.torch import load as load_bytes

    try:
        if _utf8_name(p):
            with safe_open(str(p), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in (names if names is not None else f.keys())}
        return load_bytes(p.read_bytes())
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise UserError(f"{p}: not a volrot checkpoint (not a valid safetensors file: {type(e).__name__})") from None


def checkpoint_metadata(
    model: nn.Module,
    *,
    class_names,
    input: dict[str, Any],
    preprocessing: dict[str, Any],
    data: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    epoch: int | None = None,
    selected_by: str | None = None,
    parameters: int | None = None,
) -> dict[str, Any]:
    """The model card of `model` (as the JSON-ready dict written into checkpoints). `data` may
    be a full `DataBundle.describe()`: what the card stores elsewhere is dropped from it."""
    import volrot
    from volrot.models import count_parameters

    config = dict(model.volrot_config)
    k, c = config.pop("num_classes"), config.pop("in_channels")
    if k != len(class_names) or c != int(input["shape"][0]):
        raise ValueError(f"model has {k} outputs / {c} channels; card says {len(class_names)} / {input['shape'][0]}")
    raw = {
        "format": FORMAT,
        "schema_version": FORMAT_VERSION,
        "arch": model.volrot_arch,
        "model_options": config,
        "class_names": list(class_names),
        "input": input,
        "preprocessing": preprocessing,
        "data": data_description(data),
        "recipe": recipe,
        "metrics": metrics or {},
        "epoch": epoch,
        "selected_by": selected_by,
        "parameters": count_parameters(model) if parameters is None else parameters,
        "versions": {"volrot": volrot.__version__, "torch": torch.__version__},
    }
    return ModelCard.from_dict(raw, where="checkpoint_metadata", formats=(FORMAT,)).to_dict()


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any] | ModelCard) -> None:
    """Save weights (state dict incl. buffers) with the model card `meta` (see
    `checkpoint_metadata`); the card is validated and must describe `model`."""
    card = meta if isinstance(meta, ModelCard) else ModelCard.from_dict(meta, where=str(path), formats=(FORMAT,))
    if card.arch != model.volrot_arch or card.model_config != model.volrot_config:
        raise ValueError(f"model card ({card.arch}, {card.model_config}) does not describe the model ({model.volrot_arch}, {model.volrot_config})")
    save_tensors(Path(path), model.state_dict(), card.to_dict())


def read_card(path: str | Path) -> ModelCard:
    """The validated model card of a checkpoint (no tensor is read)."""
    p = Path(path)
    _, meta = read_header(p)
    return ModelCard.from_dict(meta, where=str(p), formats=(FORMAT,))


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """`UserError` naming the first floating-point tensor that holds NaN or infinity."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "infinity"
            raise UserError(f"{where}: weight '{name}' holds {bad}; refusing a model whose outputs would be meaningless")


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
           "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}  # fmt: skip


def _check_against_model(p: Path, header: dict[str, Any], model: nn.Module, card: ModelCard) -> None:
    """Every tensor the header declares must be one the model has, with its shape and dtype."""
    state = model.state_dict()
    missing = sorted(set(state) - set(header))
    unexpected = sorted(set(header) - set(state))
    if missing or unexpected:
        raise UserError(
            f"{p}: weights do not match arch '{card.arch}' with its recorded options "
            f"(missing {len(missing)}, unexpected {len(unexpected)}; e.g. {(missing or unexpected)[0]})"
        )
    for name, t in state.items():
        entry = header[name]
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or [int(s) for s in shape] != list(t.shape):
            raise UserError(
                f"{p}: weight '{name}' has shape {shape} but arch '{card.arch}' with the recorded options, "
                f"{card.num_classes} class name(s) and {card.in_channels} input channel(s) expects {list(t.shape)} "
                "(metadata does not match its weights)"
            )
        dtype = _DTYPES.get(entry.get("dtype"))
        if dtype is None or dtype.is_floating_point != t.is_floating_point():
            raise UserError(f"{p}: weight '{name}' is stored as {entry.get('dtype')}, expected {t.dtype}")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model recorded in a checkpoint, load its weights; return it in eval mode with
    its model card. (`volrot.load_model` wraps this in a `Predictor` for inference.)"""
    from volrot.models import create_model

    p = Path(path)
    header, meta = read_header(p)
    card = ModelCard.from_dict(meta, where=str(p), formats=(FORMAT,))
    try:
        model = create_model(card.arch, **card.model_config)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None
    except (TypeError, ValueError, RuntimeError) as e:  # options of the wrong type or range
        raise UserError(f"{p}: arch '{card.arch}' cannot be built from the recorded options ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    _check_against_model(p, header, model, card)
    tensors = _read_all(p, names=list(model.state_dict()))
    check_finite(tensors, str(p))
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), card
