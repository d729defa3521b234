"""Speed, memory and FLOP measurements of one model against a plain `resnet3d`, as JSON.

The one timing utility of the project: every script under `benchmarks/` times through
`time_calls`, so warm-up, device synchronisation and the median/min/max summary are the same
everywhere.

What each figure measures:
- **time**: wall-clock seconds of one call, after `warmup` untimed calls, over `repeats` calls;
  reported as median, min, max and all samples. On CUDA each call is bracketed by CUDA events
  after a `torch.cuda.synchronize()`, so queued kernels are counted; on CPU `time.perf_counter`.
- **inference**: `model.eval()` forward of one batch under `torch.inference_mode()`.
- **training step**: `zero_grad -> forward -> cross-entropy -> backward -> Adam step` in
  `model.train()` on one batch.
- **peak memory**: CUDA: `torch.cuda.max_memory_allocated()` during one call, minus the memory
  allocated just before it (model, optimiser state and input are *not* in the figure), plus the
  absolute peak. CPU: the bytes that glibc malloc has in use (`mallinfo2`: arena + mmapped
  blocks; torch's CPU tensors are allocated there), sampled every millisecond by a thread, peak
  minus the level just before the call. Peaks shorter than a millisecond can be missed, and
  memory of other threads' work in the process counts too; outside glibc the RSS growth is used
  instead (a lower bound: reused memory is not seen).
- **FLOPs**: `torch.utils.flop_counter.FlopCounterMode` over one inference forward of one batch:
  convolutions and matrix products (einsum/bmm/mm) only; elementwise work is not counted. Also
  per sample: the forward and the backward of a training step (`train_flops`).
- **saved activations**: bytes of the tensors autograd keeps for backward in one training
  forward, per sample (`saved_activation_bytes`): the machine- and allocator-independent part of
  a training step's peak memory.
- **invariance error**: for an arch that declares a symmetry, max over the elements of its
  declared cube subgroup (`volrot.so3.check.invariance_error`: the 24 rotations for O/SO(3),
  48 for Oh/O(3), 8 for D4, ...) of `max|f(g x) − f(x)| / max|f(x)|` on the logits, in eval
  mode and in the precision of the run (bf16 autocast with `amp=True`). bf16
  logits have a relative resolution of 2⁻⁸ ≈ 4e-3, so under autocast the figure is either 0
  (the rotated logits round to the same bf16 numbers) or at least about 4e-3.

This module imports only `torch` and the standard library at the top, so a script timing an
older source tree of volrot can load it by file path (see `benchmarks/bench_equilopo_cpu.py`).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import re
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from volrot.device import autocast

SCHEMA = "volrot-benchmark/1"
REFERENCE_ARCH = "resnet3d"
REFERENCE_RECIPE_WIDTH = 64  # recipes/resnet3d_adrenal.yaml: the MedMNIST3D ResNet-18


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Seconds per call: median, min and max over `samples` (after `warmup` untimed calls)."""

    median: float
    min: float
    max: float
    samples: list[float]
    warmup: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], *, device: torch.device | str = "cpu", repeats: int = 3, warmup: int = 1) -> Timing:
    """Time `fn()` `repeats` times after `warmup` untimed calls; CUDA events on CUDA."""
    device = torch.device(device)
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return Timing(statistics.median(samples), min(samples), max(samples), samples, warmup)


# --------------------------------------------------------------------------- memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _malloc_in_use_reader() -> Callable[[], int] | None:
    """glibc's bytes in use (heap arenas + mmapped blocks) via mallinfo2, or None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return in_use


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakSampler:
    """Highest value of `read()` seen by a thread polling it every `interval` seconds."""

    def __init__(self, read: Callable[[], int], interval: float = 0.001):
        self.read = read
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.read()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())


def peak_memory(fn: Callable[[], Any], *, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Peak memory of one call of `fn()` (see the module docstring for what it measures)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_bytes": peak - before, "peak_bytes_absolute": peak,
                "method": "torch.cuda.max_memory_allocated minus memory allocated before the call"}
    read, method = _malloc_in_use_reader(), "glibc mallinfo2 bytes in use (heap + mmapped), peak minus before, sampled every 1 ms"
    if read is None:
        if not os.path.exists("/proc/self/statm"):
            return {"peak_bytes": None, "peak_bytes_absolute": None, "method": "unavailable on this platform"}
        read, method = _rss_bytes, "process RSS growth over its level before the call, sampled every 1 ms (lower bound)"
    gc.collect()
    before = read()
    with _PeakSampler(read) as sampler:
        fn()
    return {"peak_bytes": max(sampler.peak - before, 0), "peak_bytes_absolute": sampler.peak, "method": method}


# --------------------------------------------------------------------------- model-level


def autocast_context(device: torch.device, amp: bool):
    """bf16 autocast on the run's device (CPU included) when `amp`, else a no-op context."""
    return autocast(device, amp, cpu=True)


def forward_flops(model: torch.nn.Module, x: torch.Tensor, *, amp: bool = False) -> int:
    """FLOPs of one eval forward of `x`, as counted by FlopCounterMode (conv + matmul only)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), autocast_context(x.device, amp), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def train_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, amp: bool = False) -> dict[str, int]:
    """FLOPs of one training forward and of its backward (conv + matmul, FlopCounterMode), in
    train mode: machine-independent cost figures of a training step (the optimiser is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as fwd:
        with autocast_context(x.device, amp):
            loss = F.cross_entropy(model(x).float(), y)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {"forward": int(fwd.get_total_flops()), "backward": int(bwd.get_total_flops())}


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, *, amp: bool = False) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one training forward of `x`
    (distinct storages, parameters excluded): the activation memory a training step must hold,
    independent of the allocator and the machine."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in params and ptr != 0:
            seen[ptr] = max(seen.get(ptr, 0), st.nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_context(x.device, amp):
        out = model(x)
    del out
    model.zero_grad(set_to_none=True)
    return int(sum(seen.values()))


def invariance_error(model: torch.nn.Module, x: torch.Tensor, *, amp: bool = False, elements=None) -> float:
    """Max relative logit change over `elements` (default: the model's declared group), eval
    mode, run precision (`volrot.so3.check.invariance_error`)."""
    from volrot.models.registry import symmetry_of
    from volrot.so3.check import invariance_error as check_invariance

    elements = symmetry_of(model).group.elements if elements is None else elements
    model.eval()
    with torch.inference_mode(), autocast_context(x.device, amp):
        return check_invariance(model, x, elements)


def make_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, amp: bool):
    """(inference call, training-step call) closures over one fixed batch."""
    device = x.device
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def infer():
        with torch.inference_mode(), autocast_context(device, amp):
            return model(x)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast_context(device, amp):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    return infer, train_step


def measure_model(
    arch: str,
    options: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    batch: int = 4,
    size: int = 28,
    num_classes: int = 2,
    repeats: int = 3,
    warmup: int = 1,
    amp: bool = False,
    invariance_samples: int = 2,
    seed: int = 0,
    compile: bool = False,
) -> dict[str, Any]:
    """Build `arch` with `options` and measure it (inference, training step, memory, FLOPs).
    With `compile`, inference and training step are timed on `torch.compile(model)` (the
    compilation happens in the warm-up calls); FLOPs and invariance on the eager model."""
    from volrot.models.registry import count_parameters, create_model, symmetry_of

    device = torch.device(device)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, in_channels=1, **options).to(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, size, size, size, generator=gen).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    infer, train_step = make_steps(torch.compile(model) if compile else model, x, y, amp=amp)
    symmetry = symmetry_of(model)
    result: dict[str, Any] = {
        "arch": arch,
        "config": dict(getattr(model, "volrot_config", options)),
        "symmetry": symmetry.describe(),
        "invariance_group_order": symmetry.group.order,
        "parameters": count_parameters(model),
        "compiled": bool(compile),
        "flops_forward_per_batch": forward_flops(model, x, amp=amp),
    }
    result["flops_forward_per_sample"] = result["flops_forward_per_batch"] / batch
    step_flops = train_flops(model, x, y, amp=amp)
    result["flops_train_forward_per_sample"] = step_flops["forward"] / batch
    result["flops_backward_per_sample"] = step_flops["backward"] / batch
    result["saved_activation_bytes_per_sample"] = saved_activation_bytes(model, x, amp=amp) / batch
    model.eval()
    infer()  # first call outside the memory figure (lazy buffers, kernel selection)
    result["inference_memory"] = peak_memory(infer, device=device)
    result["inference_s"] = time_calls(infer, device=device, repeats=repeats, warmup=warmup).to_dict()
    model.train()
    train_step()  # creates the Adam state, so the memory figure is of a steady-state step
    result["train_memory"] = peak_memory(train_step, device=device)
    result["train_step_s"] = time_calls(train_step, device=device, repeats=repeats, warmup=warmup).to_dict()
    if not symmetry.trivial and invariance_samples > 0:
        xs = x[:invariance_samples]
        result["invariance_error"] = invariance_error(model, xs, amp=amp)
        result["invariance_samples"] = int(xs.shape[0])
    else:
        result["invariance_error"] = None
    return result


def device_info(device: torch.device | str) -> dict[str, Any]:
    """Names of the hardware the figures were taken on."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "type": device.type,
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


def _load_average() -> float | None:
    """1-minute load average: the timings are only as quiet as the machine."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_slug(info: dict[str, Any]) -> str:
    """A file-name-safe name of the hardware: the GPU name on CUDA, the CPU model on CPU."""
    name = info.get("gpu") if info["type"] == "cuda" else info["cpu"]
    name = re.sub(r"\((R|TM)\)|CPU|@.*$|NVIDIA|Processor", " ", name or "unknown", flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"
    return f"{info['type']}-{slug}"


def reference_options(width: int | None = None) -> dict[str, Any]:
    """`resnet3d` at its recipe width (64, the MedMNIST3D ResNet-18) unless `width` is given."""
    return {"width": REFERENCE_RECIPE_WIDTH if width is None else width, "depth": 18}


def _ratio(a, b):
    return a / b if a is not None and b else None


def ratios(model: dict[str, Any], reference: dict[str, Any]) -> dict[str, float | None]:
    """model / reference for time, memory, FLOPs and parameters (> 1: the model costs more)."""
    return {
        "inference_s": _ratio(model["inference_s"]["median"], reference["inference_s"]["median"]),
        "train_step_s": _ratio(model["train_step_s"]["median"], reference["train_step_s"]["median"]),
        "inference_memory": _ratio(model["inference_memory"]["peak_bytes"], reference["inference_memory"]["peak_bytes"]),
        "train_memory": _ratio(model["train_memory"]["peak_bytes"], reference["train_memory"]["peak_bytes"]),
        "flops_forward": _ratio(model["flops_forward_per_batch"], reference["flops_forward_per_batch"]),
        "parameters": _ratio(model["parameters"], reference["parameters"]),
    }


def run_benchmark(
    arch: str,
    options: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
    batch: int = 4,
    size: int = 28,
    repeats: int = 3,
    warmup: int = 1,
    amp: bool = False,
    reference_width: int | None = None,
    invariance_samples: int = 2,
    num_classes: int = 2,
    compile: bool = False,
) -> dict[str, Any]:
    """Measure `arch` and `resnet3d` in this process; the JSON-ready report with their ratios."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from volrot.errors import UserError

        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    common = dict(device=dev, batch=batch, size=size, num_classes=num_classes, repeats=repeats,
                  warmup=warmup, amp=amp, invariance_samples=invariance_samples, compile=compile)
    started = time.time()
    load_start = _load_average()
    model = measure_model(arch, dict(options or {}), **common)
    reference = measure_model(REFERENCE_ARCH, reference_options(reference_width), **common)
    return {
        "schema": SCHEMA,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "device": device_info(dev),
        "load_average_1min": {"start": load_start, "end": _load_average()},
        "precision": "bf16 autocast" if amp else "fp32",
        "compiled": bool(compile),
        "batch": batch,
        "size": size,
        "input_shape": [batch, 1, size, size, size],
        "repeats": repeats,
        "warmup": warmup,
        "model": model,
        "reference": reference,
        "ratio_to_reference": ratios(model, reference),
    }


def default_result_path(report: dict[str, Any], directory: str | Path = "benchmarks/results") -> Path:
    """benchmarks/results/<arch>_<hardware>_b<batch>_s<size>[_<blocks>blk][_bf16].json"""
    m = report["model"]
    parts = [m["arch"], hardware_slug(report["device"]), f"b{report['batch']}", f"s{report['size']}"]
    if "blocks" in m["config"]:
        parts.append(f"{m['config']['blocks']}blk")
    if report["precision"] != "fp32":
        parts.append("bf16")
    if report.get("compiled"):
        parts.append("compiled")
    return Path(directory) / ("_".join(parts) + ".json")


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- README table


def _fmt_s(t: float) -> str:
    return f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"


def _fmt_bytes(b) -> str:
    if b is None:
        return "–"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def _describe(m: dict[str, Any]) -> str:
    cfg = m["config"]
    if m["arch"] == "equilopo":
        return f"equilopo {cfg.get('blocks')} blk, {cfg.get('channels')} ch, L {cfg.get('lmax')}→{cfg.get('filter_lmax')}"
    if "width" in cfg:
        return f"{m['arch']} width {cfg['width']}"
    return m["arch"]


def _row(r: dict[str, Any], m: dict[str, Any], ratio: dict[str, Any] | None) -> str:
    dev = r["device"]
    hw = dev.get("gpu") if dev["type"] == "cuda" else f"{dev['cpu']}, {dev['torch_threads']} thread(s)"
    inv = m.get("invariance_error")
    times = []
    for key in ("inference_s", "train_step_s"):
        t = m[key]
        cell = f"{_fmt_s(t['median'])} ({_fmt_s(t['min'])}–{_fmt_s(t['max'])})"
        times.append(cell + (f", {ratio[key]:.2f}×" if ratio else ""))
    precision = r["precision"] + (", compiled" if r.get("compiled") else "")
    bwd = m.get("flops_backward_per_sample")
    saved = m.get("saved_activation_bytes_per_sample")
    return (f"| {hw} | {_describe(m)}{'' if ratio else ' (reference)'} | {precision} | {r['batch']}, {r['size']}³ "
            f"| {m['parameters']:,} | {m['flops_forward_per_sample'] / 1e9:.2f} / {'–' if bwd is None else f'{bwd / 1e9:.2f}'} "
            f"| {_fmt_bytes(saved)} | {times[0]} | {times[1]} "
            f"| {_fmt_bytes(m['inference_memory']['peak_bytes'])} / {_fmt_bytes(m['train_memory']['peak_bytes'])} "
            f"| {'–' if inv is None else f'{inv:.1e}'} |")


def render_table(reports: list[dict[str, Any]]) -> str:
    """A markdown table: per report, the model's row (times with their ratio to the reference)
    and then its resnet3d reference's row, measured in the same process."""
    head = ("| hardware | model | precision | batch, size | params | GFLOP fwd / bwd per sample | saved activations / sample "
            "| inference / batch: median (min–max), × resnet3d | train / step: median (min–max), × resnet3d "
            "| peak memory infer / train | invariance error |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for report in reports:
        runs = [report] + ([report["train_batch_run"]] if "train_batch_run" in report else [])
        for r in runs:  # train_batch_run: the same arch measured again at the training batch
            lines.append(_row(r, r["model"], r["ratio_to_reference"]))
            lines.append(_row(r, r["reference"], None))
    return "\n".join(lines)


def load_reports(paths) -> list[dict[str, Any]]:
    """The harness reports among `paths` (JSON files of other schemas are skipped)."""
    out = []
    for p in sorted(Path(p) for p in paths):
        data = json.loads(Path(p).read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            out.append(data)
    return out
