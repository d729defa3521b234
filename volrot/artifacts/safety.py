"""Static checks that run before any model file reaches a loader that could execute code.

volrot loads four kinds of model files; none may run code merely by being opened:

- checkpoints (`.safetensors`): tensors + JSON, read by `safetensors` (never unpickled);
- ONNX: a protobuf graph, read by onnxruntime (no pickle; external-data files are refused);
- TorchScript (`torch.jit.save` zip) and pt2 (`torch.export.save` zip): these contain pickles.
  TorchScript's unpickler is C++ and only rebuilds tensors and TorchScript classes, but a class
  with `__setstate__` runs TorchScript code at load time; `torch.export.load` unpickles
  "use_pickle" weights and constants with the *Python* unpickler (`weights_only=False`).

`check_torch_archive(path)` therefore opens the zip itself and refuses it unless every pickle
inside (nested `torch.save` zips included) only names allowed globals, no TorchScript class
defines `__setstate__`, no pt2 weight/constant is stored as a pickle, and the archive carries
volrot export metadata. Only then may `torch.jit.load` / `torch.export.load` see it.

`sniff(path)` names the container of a file from its first bytes, so that a pickle renamed to
`model.onnx` or `best.safetensors` is refused with a clear message. This module imports
neither torch nor onnxruntime.
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from pathlib import Path

from volrot.errors import UserError

EXTRA_NAME = "volrot.json"  # metadata member (`<archive>/extra/volrot.json`) of TorchScript/pt2
EXPORT_FORMAT = "volrot-export"

# Globals a tensor-only pickle needs (what torch.jit.save / torch.save write for tensors).
_ALLOWED_EXACT = {
    "collections OrderedDict",
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_parameter",
    "torch._utils _rebuild_tensor",
    "torch device",
    "torch Size",
}
_ALLOWED_MODULES = ("torch.jit._pickle",)


def sniff(path: str | Path) -> str:
    """'zip', 'pickle', 'safetensors' or 'other' (ONNX protobuf has no magic number)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "other"


def refuse_pickle(path: str | Path, what: str) -> None:
    """UserError if `path` is a pickle (never loaded): the message names what was expected."""
    if sniff(path) == "pickle":
        raise UserError(f"{path}: a Python pickle, not a {what}; refusing to load it (pickles can run code)")


def _allowed(name: str) -> bool:
    module, _, attr = name.partition(" ")
    if module.startswith("__torch__"):  # TorchScript classes, rebuilt from the archive's code/
        return True
    if name in _ALLOWED_EXACT or module in _ALLOWED_MODULES:
        return True
    return module == "torch" and attr.endswith("Storage")


def pickle_globals(data: bytes, source: str) -> list[str]:
    """The globals ('module name') a pickle would import, found by reading its opcodes only.

    A `STACK_GLOBAL` whose operands are not plain strings pushed just before is reported as
    '<unresolved>' (and so refused)."""
    found: list[str] = []
    strings: list[str | None] = []  # recent stack pushes that are strings (None: not a string)
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.append(str(arg))
                strings.append(None)
            elif name == "STACK_GLOBAL":
                mod, attr = (strings[-2], strings[-1]) if len(strings) >= 2 else (None, None)
                found.append(f"{mod} {attr}" if mod is not None and attr is not None else "<unresolved>")
                strings.append(None)
            elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"):
                strings.append(str(arg))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(memo.get(int(arg)))
            elif name not in ("PROTO", "FRAME", "STOP"):
                strings.append(None)
    except Exception as e:
        raise UserError(f"{source}: unreadable pickle inside the archive ({type(e).__name__})") from None
    return found


def _scan_zip(z: zipfile.ZipFile, source: str, depth: int = 0) -> None:
    """Check every pickle member (`*.pkl`, `*.debug_pkl`; what the torch loaders unpickle) and
    every nested zip (`torch.save` files inside a pt2 archive). Raw tensor members are bytes
    that no loader unpickles."""
    for info in z.infolist():
        if info.filename.endswith(("pkl", ".pickle")):
            bad = [g for g in pickle_globals(z.read(info), f"{source}:{info.filename}") if not _allowed(g)]
            if bad:
                raise UserError(
                    f"{source}: refusing to load: {info.filename} is a pickle that imports {bad[0]!r} "
                    "(a volrot export only holds tensors)"
                )
        elif _head(z, info) == b"PK\x03\x04":
            try:
                inner = zipfile.ZipFile(io.BytesIO(z.read(info)))
            except zipfile.BadZipFile:
                continue  # raw tensor bytes that happen to start like a zip
            if depth > 1:
                raise UserError(f"{source}: refusing to load: zip archives nested too deeply")
            with inner:
                _scan_zip(inner, f"{source}:{info.filename}", depth + 1)


def _head(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with z.open(info) as f:
        return f.read(4)


def read_archive_metadata(path: str | Path) -> dict:
    """The volrot metadata (`extra/volrot.json`) of a TorchScript/pt2 archive, read with zipfile."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if n.split("/")[-2:] == ["extra", EXTRA_NAME]]
            if not names:
                raise UserError(f"{p}: not a volrot export (no extra/{EXTRA_NAME} metadata in the archive)")
            meta = json.loads(z.read(names[0]).decode("utf-8"))
    except zipfile.BadZipFile:
        raise UserError(f"{p}: not a TorchScript/pt2 archive (not a valid zip file)") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{p}: corrupt volrot metadata in the archive") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"{p}: not a volrot export (metadata format {meta.get('format') if isinstance(meta, dict) else None!r})")
    return meta


def check_torch_archive(path: str | Path) -> dict:
    """Refuse a TorchScript/pt2 zip that could run code when loaded; return its volrot metadata."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file not found: {p}")
    refuse_pickle(p, "TorchScript/pt2 archive")
    meta = read_archive_metadata(p)
    with zipfile.ZipFile(p) as z:
        _scan_zip(z, str(p))
        for info in z.infolist():
            name = info.filename
            if "/code/" in name and name.endswith(".py") and b"__setstate__" in z.read(info):
                raise UserError(f"{p}: refusing to load: {name} defines __setstate__ (code that runs at load time)")
            if name.endswith(("model_weights_config.json", "model_constants_config.json")):
                config = json.loads(z.read(info).decode("utf-8")).get("config", {})
                if any(isinstance(v, dict) and v.get("use_pickle") for v in config.values()):
                    raise UserError(f"{p}: refusing to load: {name} stores tensors as pickles")
    return meta
