"""`volrot inspect-activation`: run the probes on a few volumes, write figures and `inspect.json`.

`inspect_model(model, volumes, ...)` -> `InspectReport`; `inspect_checkpoint(path, ...)` loads a
checkpoint and its recorded data (like `volrot eval-rotated`), inspects and writes the files;
`print_report` prints the summary tables.

`inspect.json` fields:

* ``meta``: checkpoint, arch, data, split, samples (volumes run), seed, functions (drawn per
  layer), rotations {method, count, spacing_deg}, layer (the `--layer` filter), elapsed_s,
  volrot_version.
* ``local_activations[]`` (EquiLoPO local activations, one per layer; see
  `volrot.inspection.activations`): layer, coefficients, input_lmax, output_lmax (degrees kept),
  full_lmax (2L), functions_total, functions_sampled, rotations; ``mse`` = mean (σ(f)(Q) −
  max(f(Q), 0))² over the sampled functions × rotations, ``nmse`` = mse / mean f(Q)²,
  ``mse_polynomial`` = the same for the untruncated n·P(f/n), ``truncation_rms`` = RMS of
  output − n·P(f/n) (0 when nothing is truncated); ``wrong_sign_fraction`` = share of samples
  whose output has the opposite sign of a nonzero input (= ``negative_output_for_positive_input``
  + ``positive_output_for_negative_input``); ``input_mean`` / ``input_std`` (μ = f⁰, σ = SO(3)
  standard deviation; mean, p5, median, p95 over functions), ``mean_over_3std`` (μ/3σ: p5,
  median, p95); ``regimes`` = shares of all functions with μ+3σ ≤ 0 (all_negative), μ−3σ ≥ 0
  (all_positive) or neither (mixed); ``sampled_regimes`` = shares of the sampled functions whose
  values at every rotation are ≤ 0 / ≥ 0 / both signs.
* ``softmax[]`` (SO(3) SoftMax modules): layer, input_lmax, functions_sampled,
  positive_max_fraction, pearson_positive_max (SoftMax vs sampled max where max > 0),
  mean_ratio_positive_max, mean_abs_softmax_negative_max, above_sampled_max_fraction.
* ``global_gates[]`` (global activations): layer, functions_sampled, gate_mean, gate_p5,
  gate_median, gate_p95, closed_fraction (gate < 0.1).
* ``equivariance``: rotation {matrix, angle_deg, label}, logits_rel_error, layers[] = {name,
  module_type, fiber (so3 | regular | irreps | spatial), law (the transformation law in words), exact_law (False: plain CNN, spatial law
  assumed), shape (without batch), rel_error, max_rel_error, invariant_rel_error, order}
  (`volrot.inspection.equivariance`).
* ``files``: figure name -> file name.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from volrot.errors import UserError
from volrot.inspection.activations import GateProbe, LocalActivationProbe, SoftMaxProbe
from volrot.inspection.equivariance import EquivarianceResult, measure_equivariance


@dataclass
class InspectReport:
    meta: dict[str, Any]
    local: list = field(default_factory=list)  # LocalActivationSamples
    softmax: list = field(default_factory=list)  # SoftMaxSamples
    gates: list = field(default_factory=list)  # GateSamples
    equivariance: EquivarianceResult | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "meta": self.meta,
            "local_activations": [s.stats() for s in self.local],
            "softmax": [s.stats() for s in self.softmax],
            "global_gates": [g.stats() for g in self.gates],
            "equivariance": self.equivariance.to_dict() if self.equivariance else None,
            "files": self.files,
        }


def _matches(name: str, layer: str) -> bool:
    return layer == "all" or name == layer or name.startswith(layer + ".")


def activation_modules(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) of every SO(3) nonlinearity: kind local | softmax | global."""
    from volrot.models.equilopo import GlobalActivation, LocalActivation, SO3SoftMax

    kinds = ((LocalActivation, "local"), (SO3SoftMax, "softmax"), (GlobalActivation, "global"))
    return [(n, m, k) for n, m in model.named_modules() for cls, k in kinds if isinstance(m, cls)]


@torch.no_grad()
def inspect_model(
    model: nn.Module,
    volumes: torch.Tensor,
    *,
    layer: str = "all",
    functions: int = 400,
    rotations=None,
    seed: int = 0,
    batch_size: int = 2,
    rotation_info: dict | None = None,
) -> InspectReport:
    """Probe the SO(3) nonlinearities on `volumes` (N, C, D, H, W) and measure feature-level
    equivariance on the first volume. `rotations` (K, 3, 3): where the SO(3) functions are
    evaluated (default: `so3_grid(20)`); `functions`: drawn per layer (spread over the batches).
    The model runs in eval mode on the device of its parameters.
    """
    from volrot.so3.sampling import so3_grid

    if rotations is None:
        grid = so3_grid(20.0)
        rotations = grid.matrices
        rotation_info = {"method": "so3-grid", "count": len(grid), "spacing_deg": grid.details["spacing_deg"]}
    rotation_info = rotation_info or {"method": "given", "count": int(len(rotations))}
    modules = activation_modules(model)
    chosen = [(n, m, k) for n, m, k in modules if _matches(n, layer)]
    if layer != "all" and not chosen:
        from volrot.inspection.equivariance import feature_layers

        known = sorted({n for n, _, _ in modules} | {n for n, _, _ in feature_layers(model)})
        if not any(_matches(n, layer) for n in known):
            raise UserError(f"--layer {layer!r} matches no layer; layers: {', '.join(known) or '(none)'}")
    device = next(model.parameters()).device
    batches = [volumes[i : i + batch_size] for i in range(0, len(volumes), batch_size)]
    per_call = max(1, math.ceil(functions / len(batches)))
    probes, handles = [], []
    for i, (name, m, kind) in enumerate(chosen):
        if kind == "local":
            p = LocalActivationProbe(name, m, per_call, seed + 101 * i)
        elif kind == "softmax":
            p = SoftMaxProbe(name, m, per_call, seed + 101 * i)
        else:
            p = GateProbe(name, per_call, seed + 101 * i)
        probes.append((kind, p))
        handles.append(m.register_forward_hook(p))
    was_training = model.training
    model.eval()
    try:
        if probes:
            for b in batches:
                model(b.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    report = InspectReport(meta={"rotations": rotation_info, "functions": functions, "seed": seed, "layer": layer})
    from volrot.inspection.activations import SamplingRows

    rows = SamplingRows(rotations)
    top = max((p.samples.keep if k == "local" else p.lmax for k, p in probes if k != "global"), default=0)
    rows(top)  # one Wigner evaluation for every layer
    for kind, p in probes:
        if kind == "local":
            report.local.append(p.collect(rows))
        elif kind == "softmax":
            report.softmax.append(p.collect(rows))
        else:
            report.gates.append(p.collect())
    report.equivariance = measure_equivariance(model, volumes[:1].to(device))
    return report


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "model"


def write_report(report: InspectReport, out: Path) -> dict[str, Path]:
    """Write the figures and `inspect.json` into `out`; returns name -> path."""
    import json

    from volrot.fileio import atomic_write_text
    from volrot.inspection import plots

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for s in report.local:
        paths[f"activation {s.name}"] = plots.plot_local_activation(s, out / f"activation_{_safe(s.name)}.png")
    gates = {g.name: g for g in report.gates}
    for s in report.softmax:
        owner = s.name.rsplit(".softmax", 1)[0] if s.name.endswith(".softmax") else None
        paths[f"softmax {s.name}"] = plots.plot_softmax(s, out / f"softmax_{_safe(s.name)}.png", gates.get(owner))
    if report.equivariance is not None:
        paths["montage"] = plots.plot_montage(report.equivariance, out / "montage.png")
        paths["equivariance"] = plots.plot_equivariance_errors(report.equivariance, out / "equivariance.png")
    report.files = {k: p.name for k, p in paths.items()}
    paths["inspect.json"] = out / "inspect.json"
    atomic_write_text(paths["inspect.json"], json.dumps(report.to_dict(), indent=2, allow_nan=True))
    return paths


def inspect_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    root: str | None = None,
    split: str = "test",
    samples: int = 4,
    layer: str = "all",
    functions: int = 400,
    grid_deg: float = 20.0,
    seed: int = 0,
    device: str = "auto",
    out: str | Path | None = None,
) -> tuple[InspectReport, dict[str, Path]]:
    """Load a checkpoint and `samples` seeded volumes of its data (`split`), inspect, write files
    to `out` (default `<checkpoint folder>/inspect-activation`)."""
    from volrot.device import resolve_device
    from volrot.engine.checkpoint_data import check_split, checkpoint_split
    from volrot.so3.sampling import so3_grid

    t0 = time.perf_counter()
    path = Path(checkpoint)
    check_split(split)
    if samples < 1:
        raise UserError(f"--samples must be >= 1, got {samples}")
    if functions < 1:
        raise UserError(f"--functions must be >= 1, got {functions}")
    if not 3.0 <= grid_deg <= 180.0:
        raise UserError(f"--grid-deg must be in [3, 180], got {grid_deg}")
    loaded = checkpoint_split(path, split=split, data=data, root=root, device=resolve_device(str(device)))
    model, meta, bundle, dataset = loaded.model, loaded.meta, loaded.bundle, loaded.dataset
    if len(dataset) == 0:
        raise UserError(f"split '{split}' of data '{bundle.name}' is empty")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(dataset), size=min(samples, len(dataset)), replace=False))
    volumes = torch.stack([dataset[int(i)][0] for i in picked]).float()
    if len(set(volumes.shape[-3:])) != 1:
        raise UserError(f"inspect-activation needs cubic volumes (exact grid rotations), got {tuple(volumes.shape[-3:])}")
    grid = so3_grid(float(grid_deg))
    info = {"method": "so3-grid", "count": len(grid), "spacing_deg": grid.details["spacing_deg"]}
    report = inspect_model(
        model, volumes, layer=layer, functions=functions, rotations=grid.matrices, seed=seed, rotation_info=info
    )
    import volrot

    report.meta = {
        "checkpoint": str(path),
        "arch": meta.get("arch") or type(model).__name__,
        "data": bundle.name,
        "split": split,
        "samples": [int(i) for i in picked],
        **report.meta,
        "volrot_version": volrot.__version__,
    }
    report.meta["elapsed_s"] = round(time.perf_counter() - t0, 2)
    paths = write_report(report, Path(out) if out is not None else path.parent / "inspect-activation")
    return report, paths


def print_report(report: InspectReport, console) -> None:
    """Summary tables: local activations, SoftMax, global gates, equivariance per layer."""
    from rich.table import Table

    d = report.to_dict()
    if d["local_activations"]:
        t = Table(title="local SO(3) activations vs exact ReLU (sampled functions × rotations)")
        for col in ("layer", "L in→out", "coeffs", "MSE", "NMSE", "wrong sign", "neg / mixed / pos", "μ median", "σ median"):
            t.add_column(col, justify="left" if col in ("layer", "coeffs") else "right")
        for s in d["local_activations"]:
            r = s["regimes"]
            t.add_row(
                s["layer"], f"{s['input_lmax']}→{s['output_lmax']}", s["coefficients"], f"{s['mse']:.3g}",
                f"{s['nmse']:.3g}", f"{100 * s['wrong_sign_fraction']:.1f}%",
                f"{100 * r['all_negative']:.0f} / {100 * r['mixed']:.0f} / {100 * r['all_positive']:.0f}%",
                f"{s['input_mean']['median']:.3g}", f"{s['input_std']['median']:.3g}",
            )  # fmt: skip
        console.print(t)
    if d["softmax"]:
        t = Table(title="SO(3) SoftMax vs sampled maximum")
        for col in ("layer", "functions", "max > 0", "Pearson r (max > 0)", "|SoftMax| (max ≤ 0)", "SoftMax > max"):
            t.add_column(col, justify="left" if col == "layer" else "right")
        for s in d["softmax"]:
            t.add_row(
                s["layer"], str(s["functions_sampled"]), f"{100 * s['positive_max_fraction']:.0f}%",
                f"{s['pearson_positive_max']:.3f}", f"{s['mean_abs_softmax_negative_max']:.3g}",
                f"{100 * s['above_sampled_max_fraction']:.1f}%",
            )  # fmt: skip
        console.print(t)
    if d["global_gates"]:
        t = Table(title="global activations: sigmoid gates")
        for col in ("layer", "mean", "p5", "median", "p95", "closed (< 0.1)"):
            t.add_column(col, justify="left" if col == "layer" else "right")
        for g in d["global_gates"]:
            t.add_row(
                g["layer"], f"{g['gate_mean']:.3f}", f"{g['gate_p5']:.3f}", f"{g['gate_median']:.3f}",
                f"{g['gate_p95']:.3f}", f"{100 * g['closed_fraction']:.1f}%",
            )  # fmt: skip
        console.print(t)
    e = d["equivariance"]
    if e:
        t = Table(title=f"feature equivariance, g = +90° about z (logits rel. error {e['logits_rel_error']:.2e})")
        for col in ("layer", "type", "shape", "fiber", "rel. error", "max rel.", "invariant"):
            t.add_column(col, justify="right" if "rel" in col or col == "invariant" else "left")
        for r in e["layers"]:
            t.add_row(
                r["name"], r["module_type"], "×".join(map(str, r["shape"])), r["fiber"] + ("" if r["exact_law"] else "*"),
                f"{r['rel_error']:.2e}", f"{r['max_rel_error']:.2e}", f"{r['invariant_rel_error']:.2e}",
            )  # fmt: skip
        console.print(t)
        laws = {r["fiber"]: r["law"] for r in e["layers"]}
        console.print("fiber laws (* = assumed, not a symmetry of the arch): " + "; ".join(f"{k} = {v}" for k, v in laws.items()), highlight=False)
        console.print("invariant = error of the invariant-pooled maps (fiber RMS / group max / irrep norms), spatial rotation only", highlight=False)
    if not d["local_activations"] and not d["softmax"]:
        console.print("no SO(3) activations in this model (EquiLoPO only): equivariance and montage only")
