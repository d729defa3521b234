"""Rotated evaluation: how a classifier's predictions change when its inputs are rotated.

`evaluate_rotated(model, dataset, task=...)` runs a model (any `nn.Module` mapping
(B, C, D, H, W) -> logits (B, K)) on every volume of `dataset`, unrotated and under each rotation
of the chosen protocols, and returns a `RotatedReport`:

- protocols: `octahedral` (the 24 exact cube rotations, no interpolation), `axes` (about x, y, z
  in steps of `angles` degrees), `so3-grid` (super-Fibonacci set with spacing ≤ `angles`),
  `haar` (`n` seeded Haar-random rotations), and always `control`: the identity passed through
  the trilinear path, plus three round trips R then Rᵀ (R = the rotations of `haar(3, seed)`;
  two resamplings, net rotation identity). The control separates the loss
  caused by interpolation from the loss caused by rotation.
- `mask="sphere"` (default) zeroes voxels outside the inscribed sphere in the unrotated *and*
  the rotated inputs, so corners never decide a result; `"pad"` zero-pads every input to the
  circumscribed sphere (the model then sees a larger grid); `"none"` rotates as is.
- per rotation: ACC and AUC (medmnist's definitions), `consistency` (fraction of samples whose
  predicted class equals the unrotated prediction), `max_abs_dlogit` / `mean_abs_dlogit`
  (|logit(R x) − logit(x)| over samples and classes) and `rel_dlogit` = max|Δlogit| / max|logit(x)|.
- per protocol: mean ± std (population std) and worst (minimum) of ACC and AUC, mean and worst
  consistency, max and mean |Δlogit|, max relative error, and the protocol details (count,
  spacing, seed...).

The unrotated predictions are computed once; rotations are batched on the model's device
(`batch_size` volumes per forward pass, several rotations of a small batch packed together).
Axis convention: see `volrot.so3.volume`.

`volrot.engine.eval_rotated.evaluate_checkpoint(path, ...)` is `volrot eval-rotated`: it loads
a checkpoint and the data it was trained on (or `data=`), runs `evaluate_rotated` and writes the
report files (`volrot.engine.rotated_report`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from scipy.special import softmax
from torch.utils.data import DataLoader, Dataset, Subset

from volrot.engine.metrics import compute_metrics
from volrot.errors import UserError
from volrot.so3.check import relative_error
from volrot.so3.groups import octahedral
from volrot.so3.sampling import RotationSet, axis_sweep, haar, octahedral_set, so3_grid
from volrot.so3.volume import apply_sphere_mask, prepare_volume, rotate_exact_batch, rotate_trilinear

PROTOCOLS = ("octahedral", "axes", "so3-grid", "haar")
MASKS = ("sphere", "pad", "none")
CONTROL = "control"
ROW_FIELDS = (
    "protocol", "index", "label", "axis", "angle_deg", "method", "rx_deg", "ry_deg", "rz_deg",
    "acc", "auc", "consistency", "max_abs_dlogit", "mean_abs_dlogit", "rel_dlogit",
)  # fmt: skip
_NUMERIC_ROW_FIELDS = ("acc", "auc", "consistency", "max_abs_dlogit", "mean_abs_dlogit", "rel_dlogit")
SUMMARY_FIELDS = (
    "count", "method", "acc_mean", "acc_std", "acc_worst", "auc_mean", "auc_std", "auc_worst",
    "consistency_mean", "consistency_worst", "max_abs_dlogit", "mean_abs_dlogit", "rel_dlogit",
)  # fmt: skip


@dataclass
class RotatedReport:
    """Result of `evaluate_rotated`. `to_dict()` is what `report.json` holds.

    `reference`: metrics on the unrotated (masked/padded) inputs. `protocols[name]`: the
    summary (`SUMMARY_FIELDS`) plus `details`. `rows`: one dict per rotation (`ROW_FIELDS`).
    """

    meta: dict[str, Any]
    reference: dict[str, Any]
    protocols: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def rows_of(self, protocol: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["protocol"] == protocol]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RotatedReport":
        """Inverse of `to_dict` (e.g. a loaded report.json); JSON nulls become NaN."""

        def nan(v):
            return float("nan") if v is None else v

        rows = [{k: (nan(v) if k in _NUMERIC_ROW_FIELDS else v) for k, v in r.items()} for r in d["rows"]]
        protocols = {
            name: {k: (nan(v) if k not in ("count", "method", "details") else v) for k, v in s.items()}
            for name, s in d["protocols"].items()
        }
        reference = {k: nan(v) for k, v in d["reference"].items()}
        return cls(dict(d["meta"]), reference, protocols, rows)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {"meta": self.meta, "reference": self.reference, "protocols": self.protocols, "rows": self.rows}
        )


@dataclass
class _Protocol:
    name: str
    rotations: RotationSet
    method: str  # "exact" | "trilinear" | "round-trip"
    group: list | None = None  # the cube elements of an exact protocol
    first_index: int = 0  # row index of the first rotation (the control set comes in two parts)


def build_protocols(protocols: Sequence[str], *, angles: float, n: int, seed: int) -> list[_Protocol]:
    """The requested rotation sets (in `PROTOCOLS` order) followed by the control set."""
    names = check_protocols(protocols)
    if not 3 <= angles <= 180:
        raise UserError(f"--angles must be between 3 and 180 degrees, got {angles}")
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    out = []
    for name in names:
        if name == "octahedral":
            out.append(_Protocol(name, octahedral_set(), "exact", octahedral()))
        elif name == "axes":
            out.append(_Protocol(name, axis_sweep(angles), "trilinear"))
        elif name == "so3-grid":
            out.append(_Protocol(name, so3_grid(angles), "trilinear"))
        elif name == "haar":
            out.append(_Protocol(name, haar(n, seed), "trilinear"))
    trips = haar(3, seed)
    labels = [{"label": f"round-trip {lab['label']}", "axis": None, "angle_deg": 0.0} for lab in trips.labels]
    details = {
        "count": 4,
        "identity": "identity rotation through the trilinear resampling path",
        "round_trip": f"R then R^T (two trilinear resamplings) for the 3 rotations of haar(3, seed={seed})",
    }
    identity = [{"label": "identity (trilinear)", "axis": None, "angle_deg": 0.0}]
    out.append(_Protocol(CONTROL, RotationSet(CONTROL, np.eye(3)[None], identity, details), "trilinear"))
    out.append(_Protocol(CONTROL, RotationSet(CONTROL, trips.matrices, labels, details), "round-trip", first_index=1))
    return out


def check_protocols(protocols: Sequence[str] | str) -> list[str]:
    if isinstance(protocols, str):
        protocols = [protocols]
    names = set()
    for p in protocols:
        if p == "all":
            names.update(PROTOCOLS)
        elif p in PROTOCOLS:
            names.add(p)
        else:
            raise UserError(f"unknown protocol '{p}' (choose from all, {', '.join(PROTOCOLS)})")
    return [p for p in PROTOCOLS if p in names]


def _rotate(x: torch.Tensor, proto: _Protocol, idx: Sequence[int], mask: str) -> torch.Tensor:
    """Rotated copies (m, B, C, D, H, W) of the prepared batch x for rotations `idx` of `proto`."""
    mats = proto.rotations.matrices[list(idx)]
    if proto.method == "exact":
        out = rotate_exact_batch(x, [proto.group[i] for i in idx])
    elif proto.method == "trilinear":
        out = rotate_trilinear(x, mats)
    elif proto.method == "round-trip":
        there = rotate_trilinear(x, mats)
        out = torch.stack([rotate_trilinear(there[i], m.T)[0] for i, m in enumerate(mats)])
    else:  # pragma: no cover - methods are set in build_protocols
        raise ValueError(proto.method)
    return apply_sphere_mask(out) if mask == "sphere" else out


def evaluate_rotated(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    task: str,
    protocols: Sequence[str] | str = PROTOCOLS,
    angles: float = 30.0,
    n: int = 64,
    seed: int = 0,
    mask: str = "sphere",
    device: str | torch.device | None = None,
    batch_size: int = 32,
    max_samples: int | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> RotatedReport:
    """Evaluate `model` on `dataset` (items `(volume (C, D, H, W), label)`) under rotations.

    `task` is "binary" or "multi-class" (as `DataBundle.task`). `device=None` uses the device of
    the model's parameters; the model is moved there and put in eval mode (nothing is trained,
    no gradients are kept). Returns a
    `RotatedReport` (see the module docstring for every field).
    """
    if task not in ("binary", "multi-class"):
        raise UserError(f"task must be 'binary' or 'multi-class', got '{task}'")
    if mask not in MASKS:
        raise UserError(f"--mask must be one of {', '.join(MASKS)}, got '{mask}'")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    plan = build_protocols(protocols, angles=angles, n=n, seed=seed)
    if max_samples is not None:
        if max_samples < 1:
            raise UserError(f"--max-samples must be >= 1, got {max_samples}")
        dataset = Subset(dataset, range(min(max_samples, len(dataset))))
    if len(dataset) == 0:
        raise UserError("the evaluation split is empty")
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = torch.device(device)
    model = model.to(device).eval()

    started = time.perf_counter()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    rows_total = sum(len(p.rotations) for p in plan)
    ref_logits, labels = [], []
    rot_logits = [[] for _ in plan]  # per protocol: list over batches of (m_total, B, K)
    input_shape = None
    bar = _progress_bar(progress)
    with torch.inference_mode(), bar:
        task_id = bar.add_task("rotated evaluation", total=len(loader) * rows_total) if progress else None
        for xb, yb in loader:
            x = prepare_volume(xb.to(device=device, dtype=torch.float32), mask)
            if input_shape is None:
                input_shape = list(x.shape[1:])
                _check_exact_possible(plan, input_shape)
            ref_logits.append(_forward(model, x).cpu())
            labels.append(torch.as_tensor(yb).reshape(-1).cpu())
            per_pass = max(1, batch_size // len(x))
            for k, proto in enumerate(plan):
                chunks = []
                for start in range(0, len(proto.rotations), per_pass):
                    idx = range(start, min(start + per_pass, len(proto.rotations)))
                    xr = _rotate(x, proto, idx, mask)
                    out = _forward(model, xr.reshape(-1, *x.shape[1:]))
                    chunks.append(out.reshape(len(idx), len(x), -1))
                    if progress:
                        bar.advance(task_id, len(idx))
                rot_logits[k].append(torch.cat(chunks).cpu())
    ref = torch.cat(ref_logits).double().numpy()
    y = torch.cat(labels).numpy().astype(np.int64)
    elapsed = time.perf_counter() - started

    reference = {**_metrics(task, y, ref), "n_samples": int(len(y))}
    rows, summaries = [], {}
    for proto, logits in zip(plan, rot_logits):
        logits = torch.cat(logits, dim=1).double().numpy()  # (R, N, K)
        proto_rows = [
            _row(proto, i, logits[i], ref, y, task) for i in range(len(proto.rotations))
        ]
        rows += proto_rows
        if proto.name in summaries:  # the control set has two parts
            merged = [r for r in rows if r["protocol"] == proto.name]
            summaries[proto.name] = _summary(merged, "trilinear / round-trip", proto.rotations.details)
        else:
            summaries[proto.name] = _summary(proto_rows, proto.method, proto.rotations.details)
    meta = {
        "task": task,
        "num_classes": int(ref.shape[1]),
        "n_samples": int(len(y)),
        "input_shape": input_shape,
        "mask": mask,
        "protocols": [p for p in summaries if p != CONTROL],
        "angles_deg": float(angles),
        "n": int(n),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "device": str(device),
        "rotated_forwards": int(rows_total * len(y)),
        "elapsed_s": round(elapsed, 3),
        "torch": torch.__version__,
    }
    return RotatedReport(meta, reference, summaries, rows)


def _check_exact_possible(plan: Iterable[_Protocol], shape: Sequence[int]) -> None:
    d, h, w = shape[-3:]
    if any(p.method == "exact" for p in plan) and not d == h == w:
        raise UserError(f"protocol 'octahedral' needs cubic volumes, got spatial size {d}x{h}x{w}")


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise UserError(f"the model must map (B, C, D, H, W) to logits (B, K); got {shape}")
    return out.float()


def _metrics(task: str, y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    m = compute_metrics(task, y, softmax(logits, axis=1))
    return {"acc": float(m["acc"]), "auc": float(m["auc"])}


def _row(proto, i, logits, ref, y, task) -> dict[str, Any]:
    lab = proto.rotations.labels[i]
    delta = np.abs(logits - ref)
    rotvec = np.degrees(Rotation.from_matrix(proto.rotations.matrices[i]).as_rotvec())
    if proto.method == "round-trip":
        rotvec = np.zeros(3)  # net rotation of R then Rᵀ
    return {
        "protocol": proto.name,
        "index": int(proto.first_index + i),
        "label": lab["label"],
        "axis": lab.get("axis"),
        "angle_deg": float(lab["angle_deg"]),
        "method": proto.method,
        "rx_deg": float(rotvec[0]),
        "ry_deg": float(rotvec[1]),
        "rz_deg": float(rotvec[2]),
        **_metrics(task, y, logits),
        "consistency": float(np.mean(logits.argmax(1) == ref.argmax(1))),
        "max_abs_dlogit": float(delta.max()),
        "mean_abs_dlogit": float(delta.mean()),
        "rel_dlogit": relative_error(logits, ref),  # max|Δlogit| / max|logit(x)| (volrot.so3.check)
    }


def _summary(rows: list[dict], method: str, details: dict) -> dict[str, Any]:
    def col(k):
        return np.array([r[k] for r in rows], dtype=np.float64)

    def stat(fn, k):
        v = col(k)
        return float(fn(v[~np.isnan(v)])) if np.any(~np.isnan(v)) else float("nan")

    return {
        "count": len(rows),
        "method": method,
        "acc_mean": stat(np.mean, "acc"),
        "acc_std": stat(np.std, "acc"),
        "acc_worst": stat(np.min, "acc"),
        "auc_mean": stat(np.mean, "auc"),
        "auc_std": stat(np.std, "auc"),
        "auc_worst": stat(np.min, "auc"),
        "consistency_mean": stat(np.mean, "consistency"),
        "consistency_worst": stat(np.min, "consistency"),
        "max_abs_dlogit": stat(np.max, "max_abs_dlogit"),
        "mean_abs_dlogit": stat(np.mean, "mean_abs_dlogit"),
        "rel_dlogit": stat(np.max, "rel_dlogit"),
        "details": details,
    }


def _progress_bar(enabled: bool):
    if not enabled:
        from contextlib import nullcontext

        return nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )


def _json_safe(obj):
    """NaN/inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
