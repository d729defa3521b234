"""Devices: `--device` parsing, mixed precision, onnxruntime providers (the ground floor).

`check_device_name` validates a `--device` value without importing torch, so a typo is
refused before any heavy import. `resolve_device` turns it into a `torch.device`,
`onnx_providers` into onnxruntime execution providers, and `autocast` is the one bf16 autocast
context used by training, evaluation and benchmarks.
"""

from __future__ import annotations

import contextlib
import re

from volrot.errors import UserError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: str) -> str:
    """`name` if it is auto, cpu, cuda or cuda:N, else a `UserError` (no torch import)."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got '{name}'")
    return name


def resolve_device(name: str):
    """The `torch.device` for `--device auto|cpu|cuda|cuda:N` (auto: CUDA when available)."""
    import torch

    check_device_name(str(name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def autocast(device, amp: bool, *, cpu: bool = False):
    """bf16 autocast on `device` when `amp`; on CPU only if `cpu` is set (training and
    evaluation keep CPU runs exact and deterministic; benchmarks may measure CPU bf16)."""
    import torch

    if not amp or (device.type == "cpu" and not cpu):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for `--device auto|cpu|cuda|cuda:N`."""
    import onnxruntime as ort

    check_device_name(device)
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise UserError(f"--device {device}: onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
