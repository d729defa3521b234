"""Running an exported ONNX model with onnxruntime and numpy only (no torch import here).

The model card (`volrot.artifacts.card.ModelCard`) is read from the ONNX `metadata_props` entry
`volrot` (a JSON string) through onnxruntime's `custom_metadata_map`, so neither torch nor the
`onnx` package is needed at prediction time. Graph input `volume` is float32 `(B, C, D, H, W)`
with a dynamic batch axis; output `logits` is `(B, K)`.

What the file says is checked against what is there: the graph's input shape must be the card's
input shape and its output width the number of class names (when the graph states them; every
run checks the logits it returns as well), and logits holding NaN or infinity are refused.

**External data is refused.** An ONNX file may keep tensors in other files that it names
(`data_location: EXTERNAL`); onnxruntime would open those paths, relative to the model's folder
or — for a model given as bytes — the working directory. volrot never writes such files, so
`external_data_tensors` walks the protobuf (wire format, standard library only) and any tensor
stored externally makes the file a `UserError`. The same walk refuses floating-point weights that
hold NaN or infinity. The model is then handed to onnxruntime as the bytes that were checked, so
the file cannot change between the check and the load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volrot.artifacts.card import EXPORT, ModelCard
from volrot.artifacts.safety import sniff
from volrot.device import onnx_providers
from volrot.errors import UserError

METADATA_KEY = "volrot"
INPUT_NAME = "volume"
OUTPUT_NAME = "logits"
#: Largest ONNX file read into memory (bytes).
MAX_ONNX_BYTES = 2**31

# Which length-delimited fields of which ONNX message hold which message (onnx.proto field
# numbers); tensors: field 13 is `external_data`, field 14 `data_location` (1 = EXTERNAL).
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "function": {7: "node", 11: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


_RAW_DTYPES = {1: "<f4", 10: "<f2", 11: "<f8", 16: "bfloat16"}  # TensorProto.DataType -> raw layout


@dataclass
class OnnxScan:
    external: int = 0  # tensors stored outside the file
    nonfinite: list[str] = field(default_factory=list)  # tensors holding NaN or infinity


def _finite(dtype_code: int, raw: bytes, floats: bytes, doubles: bytes) -> bool:
    if raw and dtype_code in _RAW_DTYPES:
        layout = _RAW_DTYPES[dtype_code]
        if layout == "bfloat16":
            bits = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2").astype(np.uint32) << 16
            values = bits.view(np.float32)
        else:
            size = np.dtype(layout).itemsize
            values = np.frombuffer(raw[: len(raw) // size * size], dtype=layout)
        return bool(np.isfinite(values).all())
    if floats and not np.isfinite(np.frombuffer(floats[: len(floats) // 4 * 4], dtype="<f4")).all():
        return False
    return not (doubles and not np.isfinite(np.frombuffer(doubles[: len(doubles) // 8 * 8], dtype="<f8")).all())


def scan_onnx(data: bytes) -> OnnxScan:
    """Walk a serialised ONNX model (protobuf wire format, standard library and numpy only):
    count tensors stored as external data and name floating-point tensors (initializers,
    constants, sparse values, in subgraphs and functions too) that hold NaN or infinity.
    ValueError if the bytes are not a well-formed protobuf."""
    scan = OnnxScan()
    stack = [("model", memoryview(data), 0)]
    while stack:
        kind, buf, depth = stack.pop()
        if depth > 64:
            raise ValueError("nesting too deep")
        children, i = _CHILDREN[kind], 0
        external, dtype_code, name = False, 0, "?"
        raw, floats, doubles = b"", bytearray(), bytearray()
        while i < len(buf):
            key, i = _varint(buf, i)
            fnum, wire = key >> 3, key & 7
            if wire == 0:
                value, i = _varint(buf, i)
                if kind == "tensor" and fnum == 14 and value == 1:
                    external = True
                elif kind == "tensor" and fnum == 2:
                    dtype_code = value
            elif wire in (1, 5):
                width = 8 if wire == 1 else 4
                if i + width > len(buf):
                    raise ValueError("truncated field")
                if kind == "tensor" and fnum == 4 and wire == 5:
                    floats += buf[i : i + 4]
                elif kind == "tensor" and fnum == 10 and wire == 1:
                    doubles += buf[i : i + 8]
                i += width
            elif wire == 2:
                n, i = _varint(buf, i)
                if i + n > len(buf):
                    raise ValueError("truncated field")
                chunk = buf[i : i + n]
                if kind == "tensor":
                    if fnum == 13:
                        external = True
                    elif fnum == 9:
                        raw = bytes(chunk)
                    elif fnum == 4:
                        floats += chunk
                    elif fnum == 10:
                        doubles += chunk
                    elif fnum == 8:
                        name = bytes(chunk).decode("utf-8", "replace")[:80]
                elif fnum in children:
                    stack.append((children[fnum], chunk, depth + 1))
                i += n
            else:
                raise ValueError(f"wire type {wire}")
        if kind == "tensor":
            scan.external += external
            if not _finite(dtype_code, raw, bytes(floats), bytes(doubles)):
                scan.nonfinite.append(name)
    return scan


def external_data_tensors(data: bytes) -> int:
    """How many tensors of a serialised ONNX model are stored outside it."""
    return scan_onnx(data).external


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
        if p.stat().st_size > MAX_ONNX_BYTES:
            raise UserError(f"{p}: {p.stat().st_size} bytes, more than the ONNX file limit {MAX_ONNX_BYTES}")
        data = p.read_bytes()
        try:
            scan = scan_onnx(data)
        except ValueError as e:
            raise UserError(f"{p}: not a readable ONNX model (malformed protobuf: {e})") from None
        if scan.external:
            raise UserError(
                f"{p}: {scan.external} tensor(s) stored as external data (other files named inside the model); "
                "volrot refuses ONNX files that read other paths — export with the weights inside the file"
            )
        if scan.nonfinite:
            raise UserError(f"{p}: weight '{scan.nonfinite[0]}' holds NaN or infinity; refusing a model whose outputs would be meaningless")
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("running an ONNX model needs onnxruntime (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; ours are reported as UserErrors
        try:
            self.session = ort.InferenceSession(data, sess_options=options, providers=onnx_providers(device))
        except UserError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"{p}: not a readable ONNX model ({first})") from None
        self.path = p
        self.card = read_card(p, self.session.get_modelmeta().custom_metadata_map)
        self.meta = self.card.to_dict()
        self.input_name = self.session.get_inputs()[0].name
        self._check_graph()

    def _check_graph(self) -> None:
        """The graph's declared input shape and output width must be the card's."""
        declared = self.session.get_inputs()[0].shape
        want = self.card.input_shape
        if len(declared) != 5 or any(isinstance(d, int) and d != w for d, w in zip(declared[1:], want)):
            raise UserError(f"{self.path}: the graph takes input {declared}, its metadata says [batch, {', '.join(map(str, want))}]")
        out = self.session.get_outputs()[0].shape
        if len(out) == 2 and isinstance(out[1], int):
            self.card.check_output_width(out[1], str(self.path))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)
        if out.ndim != 2:
            raise UserError(f"{self.path}: the model returned logits of shape {out.shape}, expected (batch, classes)")
        self.card.check_output_width(out.shape[1], str(self.path))
        check_finite_logits(out, str(self.path))
        return out


def check_finite_logits(logits: np.ndarray, where: str) -> None:
    if not np.isfinite(logits).all():
        bad = "NaN" if np.isnan(logits).any() else "infinity"
        raise UserError(f"{where}: the model returned {bad} logits; refusing to report a prediction from them")


def read_card(path: Path, props: dict[str, str]) -> ModelCard:
    if METADATA_KEY not in props:
        raise UserError(f"{path}: not a volrot ONNX export (no '{METADATA_KEY}' entry in its metadata_props)")
    return ModelCard.from_json(props[METADATA_KEY], where=str(path), formats=(EXPORT,))
