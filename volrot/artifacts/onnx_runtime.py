"""Running an exported ONNX model with onnxruntime and numpy only (no torch import here).

The model's volrot metadata is read from the ONNX `metadata_props` entry `volrot` (a JSON
string) through onnxruntime's `custom_metadata_map`, so neither torch nor the `onnx` package is
needed at prediction time. Graph input `volume` is float32 `(B, C, D, H, W)` with a dynamic
batch axis; output `logits` is `(B, K)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from volrot.artifacts.safety import EXPORT_FORMAT, sniff
from volrot.device import onnx_providers
from volrot.errors import UserError

METADATA_KEY = "volrot"
INPUT_NAME = "volume"
OUTPUT_NAME = "logits"


class OnnxSession:
    """An onnxruntime session over a volrot ONNX export: `session(x) -> logits` (numpy)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        p = Path(path)
        if not p.is_file():
            raise UserError(f"model file not found: {p}")
        kind = sniff(p)
        if kind == "pickle":
            raise UserError(f"{p}: a Python pickle, not an ONNX model; refusing to load it (pickles can run code)")
        if kind in ("zip", "safetensors"):
            what = "a TorchScript/pt2 archive" if kind == "zip" else "a safetensors checkpoint"
            raise UserError(f"{p}: {what}, not an ONNX model")
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("running an ONNX model needs onnxruntime (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; ours are reported as UserErrors
        try:
            self.session = ort.InferenceSession(str(p), sess_options=options, providers=onnx_providers(device))
        except UserError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"{p}: not a readable ONNX model ({first})") from None
        self.path = p
        self.meta = _read_metadata(p, self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


def _read_metadata(path: Path, props: dict[str, str]) -> dict[str, Any]:
    if METADATA_KEY not in props:
        raise UserError(f"{path}: not a volrot ONNX export (no '{METADATA_KEY}' entry in its metadata_props)")
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError:
        raise UserError(f"{path}: corrupt volrot metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path}: not a volrot ONNX export (metadata format {meta.get('format') if isinstance(meta, dict) else None!r})")
    return meta
