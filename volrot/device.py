"""Devices: `--device` parsing, mixed precision, onnxruntime providers (the ground floor).

`check_device_name` validates a `--device` value without importing torch, so a typo is
refused before any heavy import. `resolve_device` turns it into a `torch.device`,
`onnx_providers` into onnxruntime execution providers, and `autocast` is the one bf16 autocast
context used by training, evaluation and benchmarks. `resolve_threads` / `use_threads` pick
and apply the number of CPU threads torch computes with (`--threads`, `train.threads`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

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


def check_threads(value) -> int | None:
    """`None` (automatic) or a thread count >= 1; anything else is a `UserError` (no torch import)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"--threads (train.threads) must be a whole number >= 1, got {value!r}")
    return value


def _env_threads() -> int | None:
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(text.split(",")[0]) if text else 0
    except ValueError:
        return None
    return n if n >= 1 else None


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask; `os.cpu_count()` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def prefer_passive_wait() -> bool:
    """Let OpenMP threads sleep, not spin, while they wait (`OMP_WAIT_POLICY=PASSIVE`).

    Only possible before torch is imported (OpenMP reads it when it loads) and only when the
    user has not set the variable; returns whether it was set. Spinning threads are what makes
    torch 10-14x slower on a machine whose cores other jobs keep busy: measured with
    benchmarks/bench_threads.py, 2 threads took 14.4x the time of 1 thread with the default
    (spinning) policy and 1.06x with PASSIVE.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def resolve_threads(requested: int | None = None) -> tuple[int, str]:
    """The CPU thread count to compute with, and where it came from.

    An explicit `requested` count wins; else `OMP_NUM_THREADS` when set; else the cores that are
    idle now: usable cores minus the 1-minute load average (rounded), at least 1. On a machine
    that other jobs keep busy this is 1, because torch's default of one thread per core slows
    down 10x or more there (threads wait for each other while the cores run other work; see
    benchmarks/bench_threads.py); on an idle machine it is every core.
    """
    n = check_threads(requested)
    if n is not None:
        return n, "--threads"
    env = _env_threads()
    if env is not None:
        return env, "OMP_NUM_THREADS"
    cpus = usable_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cpus, "all cores"
    return max(1, min(cpus, cpus - int(round(load)))), "idle cores"


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count (see `resolve_threads`); returns the count set."""
    import torch

    n, _ = resolve_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


_applied: dict[str, int] = {}


def apply_threads(requested: int | None = None) -> int:
    """Use `resolve_threads(requested)` CPU threads in this process from now on (CLI commands).

    Sets torch's count if torch is imported, and otherwise `OMP_NUM_THREADS`, which torch reads
    when it is imported later; `onnx_threads()` hands the count to onnxruntime sessions.
    """
    n, _ = resolve_threads(requested)
    _applied["threads"] = n
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def onnx_threads() -> int:
    """The thread count for onnxruntime's `intra_op_num_threads` (0: its own default)."""
    return _applied.get("threads", 0)
