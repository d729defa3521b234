"""Export a checkpoint to ONNX, TorchScript or torch.export (pt2), with metadata, verified.

`export_checkpoint(checkpoint, fmt, out)`:

1. loads the checkpoint (`volrot.artifacts.checkpoint.load_checkpoint`, eval mode, CPU);
2. writes the artifact to a temporary file next to `out`, with a dynamic batch axis:
   - `onnx`: `torch.onnx.export`, input `volume` (B, C, D, H, W), output `logits` (B, K).
     Exporters are tried in order (`exporter="auto"`): the TorchScript-based one
     (`dynamo=False`, opset 17; about 10× faster here) and then the dynamo one (`dynamo=True`,
     opset 18). The first whose file passes the check below is kept; the metadata records which.
     The metadata is the JSON string `metadata_props["volrot"]`;
   - `torchscript`: `torch.jit.trace` (custom `autograd.Function`s are traced through their
     forward) + `torch.jit.save(_extra_files={"volrot.json": ...})`;
   - `pt2`: `torch.export.export` with a dynamic batch `Dim` + `torch.export.save(extra_files=...)`;
     if that archive does not load back (e.g. autocast regions), the program is lowered to core
     ATen (`run_decompositions()`) and saved again;
3. loads the written file back (ONNX through onnxruntime) and compares its logits with the eager
   model's on random inputs (batch 1 and 3: the batch axis really is dynamic) and on real inputs
   (the recorded dataset's test volumes when they can be read here without writing anything,
   and any `samples` files given, preprocessed as `predict` does). The error is
   max |Δlogit| and that divided by max |logit|; above `tolerance` (1e-4 relative), or when
   either model returns NaN or infinity, the export fails with a `UserError` and nothing is
   written at `out` (a checkpoint whose weights hold NaN is refused when it is loaded);
4. renames the temporary file onto `out` (atomic: never a half-written artifact).

Metadata: the checkpoint's model card (`volrot.artifacts.card.ModelCard`) with
`format: volrot-export` and an `export` block (format, exporter, opset, volrot and torch
versions, source checkpoint file name and SHA-256, the tolerance it was checked at).
Metadata is data: no path in it is ever used to write a file.

`load_artifact(path)` loads a TorchScript/pt2 export only after
`volrot.artifacts.safety.check_torch_archive` found nothing in it that could run code on load,
then parses its card and refuses weights holding NaN or infinity.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from volrot.artifacts.card import EXPORT, ModelCard
from volrot.artifacts.safety import EXTRA_NAME, check_torch_archive
from volrot.errors import UserError
from volrot.fileio import atomic_write

FORMATS = ("onnx", "torchscript", "pt2")
ONNX_EXPORTERS = ("torchscript", "dynamo")
# Exporter paths per format, tried in this order by exporter="auto".
EXPORTERS = {"onnx": ONNX_EXPORTERS, "torchscript": ("trace",), "pt2": ("export", "export+decompose")}
DEFAULT_TOLERANCE = 1e-4
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
_OPSET = {"torchscript": 17, "dynamo": 18}


@dataclass
class Check:
    """One comparison of the artifact with the eager model."""

    name: str  # e.g. "random, batch 3", "real: shapes test (4)"
    batch: int
    max_abs: float
    max_rel: float  # max |Δ| / max |eager logit|


@dataclass
class ExportReport:
    path: Path
    format: str
    exporter: str
    checks: list[Check]
    tolerance: float
    notes: list[str] = field(default_factory=list)  # e.g. why real inputs were not available
    attempts: list[str] = field(default_factory=list)  # exporters that failed before, and why

    @property
    def max_abs(self) -> float:
        return max(c.max_abs for c in self.checks)

    @property
    def max_rel(self) -> float:
        return max(c.max_rel for c in self.checks)


# --- inputs for the check -------------------------------------------------------------------------


def random_inputs(input_shape: Sequence[int], seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(f"random, batch {b}", torch.randn(b, *input_shape, generator=g)) for b in (1, 3)]


def recorded_data_inputs(card: ModelCard, n: int = 4) -> tuple[torch.Tensor | None, str]:
    """Up to `n` test volumes of the dataset recorded in the checkpoint, read without writing
    anything (no download, no cache); (None, reason) when that dataset is not available here."""
    from volrot.engine.checkpoint_data import recorded_bundle

    meta = card.to_dict()
    recipe = meta.get("recipe")
    if not isinstance(recipe, dict) or "data" not in recipe:
        return None, "no training recipe recorded"
    try:
        bundle = recorded_bundle(meta, source="checkpoint", max_samples=n, download=False, cache_dir=None)
        ds = bundle.test
        vols = [ds[i][0] for i in range(min(n, len(ds)))]
    except Exception as e:  # the data not being here is not an export error
        return None, f"recorded dataset '{recipe['data'].get('name')}' not readable here ({' '.join(str(e).split())[:160]})"
    if not vols:
        return None, "recorded dataset has an empty test split"
    return torch.stack(vols).float(), f"{bundle.name} test ({len(vols)})"


def sample_file_inputs(card: ModelCard, samples: Sequence[str | Path]) -> torch.Tensor | None:
    if not samples:
        return None
    from volrot.inference.inputs import InputPipeline

    pipeline = InputPipeline(card)
    return torch.from_numpy(np.stack([pipeline.load(Path(s))[0] for s in samples]))


# --- metadata ---------------------------------------------------------------------------------------


def artifact_metadata(card: ModelCard, export_info: dict[str, Any]) -> dict[str, Any]:
    """The export's model card: the checkpoint's, with `format: volrot-export` and an `export` block."""
    import volrot

    export = {**export_info, "volrot_version": volrot.__version__, "torch_version": torch.__version__}
    return card.replace(format=EXPORT, export=export).to_dict()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- writers -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and deprecation chatter; keep the CLI output ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _write_onnx(model: nn.Module, example: torch.Tensor, tmp: str, exporter: str, meta: dict[str, Any]) -> None:
    import onnx

    from volrot.artifacts.onnx_runtime import INPUT_NAME, METADATA_KEY, OUTPUT_NAME

    with _quiet():
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                model, (example,), tmp, dynamo=True, opset_version=_OPSET[exporter], input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), external_data=False, verbose=False,
            )
        else:
            torch.onnx.export(
                model, (example,), tmp, dynamo=False, opset_version=_OPSET[exporter], input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    proto = onnx.load(tmp)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    proto.producer_name, proto.doc_string = "volrot", f"volrot {meta['arch']} classifier; metadata_props['{METADATA_KEY}'] holds JSON"
    onnx.checker.check_model(proto)
    onnx.save(proto, tmp)


class _TraceCtx:
    """Stands in for an autograd.Function's ctx while tracing (backward is never traced)."""

    needs_input_grad = ()

    def save_for_backward(self, *tensors) -> None:
        pass

    def mark_non_differentiable(self, *tensors) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        pass


@contextlib.contextmanager
def _inline_autograd_functions():
    """While `torch.jit.trace` runs, call custom `autograd.Function`s' forward directly, so their
    ops are traced as ATen ops instead of an unserialisable Python call (EquiLoPO's fused
    activation). Outside tracing `apply` is unchanged; the original is restored on exit."""
    base = torch.autograd.Function
    original = base.__dict__["apply"]

    def apply(cls, *args, **kwargs):
        if not torch.jit.is_tracing():
            return original.__func__(cls, *args, **kwargs)
        if getattr(cls, "setup_context", base.setup_context) is not base.setup_context:
            return cls.forward(*args, **kwargs)  # new-style: forward takes no ctx
        return cls.forward(_TraceCtx(), *args, **kwargs)

    base.apply = classmethod(apply)
    try:
        yield
    finally:
        base.apply = original


def _write_torchscript(model: nn.Module, example: torch.Tensor, tmp: str, meta: dict[str, Any]) -> None:
    with _quiet(), _inline_autograd_functions():
        traced = torch.jit.trace(model, (example,), check_trace=False, _store_inputs=False)
    with _quiet():
        torch.jit.save(traced, tmp, _extra_files={EXTRA_NAME: json.dumps(meta, sort_keys=True)})


def _write_pt2(model: nn.Module, example: torch.Tensor, tmp: str, meta: dict[str, Any], decompose: bool) -> None:
    with _quiet():
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        if decompose:  # core ATen IR: inlines e.g. autocast regions that the pt2 loader rejects
            program = program.run_decompositions()
        torch.export.save(program, tmp, extra_files={EXTRA_NAME: json.dumps(meta, sort_keys=True)})


# --- loading an artifact back ------------------------------------------------------------------------


def _runner_for(fmt: str, path: str) -> Callable[[torch.Tensor], np.ndarray]:
    if fmt == "onnx":
        from volrot.artifacts.onnx_runtime import OnnxSession

        session = OnnxSession(path, device="cpu")
        return lambda x: session(x.numpy())
    module = load_artifact(path)
    return lambda x: module(x).detach().float().numpy()


def load_artifact(path: str | Path) -> Callable:
    """Load a volrot TorchScript (.pt) or pt2 export for use in Python: a callable
    `(B, C, D, H, W) -> logits` with `.meta`. The archive is checked first
    (`check_torch_archive`): anything that could run code on load is refused."""
    p = Path(path)
    card = ModelCard.from_dict(check_torch_archive(p), where=str(p), formats=(EXPORT,))
    kind = card.export.get("format")
    try:
        with _quiet():
            if kind == "torchscript":
                module = torch.jit.load(str(p), map_location="cpu")
            elif kind == "pt2":
                module = torch.export.load(str(p)).module()
            else:
                raise UserError(f"{p}: volrot export of format {kind!r} is not a TorchScript/pt2 archive")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{p}: cannot load the {kind} archive ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if isinstance(module, torch.jit.ScriptModule):
        module.eval()
    from volrot.artifacts.checkpoint import check_finite

    check_finite({**dict(module.named_parameters()), **dict(module.named_buffers())}, str(p))
    return _Artifact(module, card, p)


class _Artifact:
    def __init__(self, module, card: ModelCard, path: Path):
        self.module = module
        self.card = card
        self.meta = card.to_dict()
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from volrot.artifacts.onnx_runtime import check_finite_logits

        with torch.no_grad():
            out = self.module(x)
        self.card.check_output_width(out.shape[-1], str(self.path))
        check_finite_logits(out.detach().float().cpu().numpy(), str(self.path))
        return out


# --- export + verify ---------------------------------------------------------------------------------


def _compare(name: str, eager: np.ndarray, other: np.ndarray) -> Check:
    if other.shape != eager.shape:
        raise UserError(f"exported model returns shape {tuple(other.shape)} on {name}, eager {tuple(eager.shape)}")
    if not np.isfinite(other).all():  # NaN compares false with any tolerance: say so
        raise UserError(f"exported model returns NaN or infinity on {name} where the eager model does not")
    diff = float(np.max(np.abs(other.astype(np.float64) - eager.astype(np.float64))))
    scale = float(np.max(np.abs(eager))) or 1.0
    return Check(name, int(eager.shape[0]), diff, diff / scale)


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path,
    *,
    exporter: str = "auto",
    samples: Sequence[str | Path] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    real_data: bool = True,
) -> ExportReport:
    """Export `checkpoint` as `fmt` to `out`, verified against the eager model (see module doc)."""
    from volrot.artifacts.checkpoint import load_checkpoint

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if exporter != "auto" and exporter not in EXPORTERS.get(fmt, ()):
        choices = ", ".join(("auto", *EXPORTERS.get(fmt, ())))
        raise UserError(f"--exporter {exporter}: for --format {fmt} choose one of {choices}")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name, e.g. {out / ('model' + _SUFFIX[fmt])}")
    checkpoint = Path(checkpoint)
    model, card = load_checkpoint(checkpoint, device="cpu")
    input_shape = list(card.input_shape)

    inputs = random_inputs(input_shape)
    notes: list[str] = []
    if real_data:
        real, info = recorded_data_inputs(card)
        if real is not None:
            inputs.append((f"real: {info}", real))
        else:
            notes.append(f"no real inputs from the training data: {info}")
    given = sample_file_inputs(card, samples)
    if given is not None:
        inputs.append((f"real: {len(samples)} sample file(s)", given))
    with torch.no_grad():
        eager = [(name, x, model(x).float().numpy()) for name, x in inputs]
    for name, _, ref in eager:
        card.check_output_width(ref.shape[-1], str(checkpoint))
        if not np.isfinite(ref).all():
            raise UserError(f"{checkpoint}: the model returns NaN or infinity on {name}; nothing exported to {out}")
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(1))

    exporters = [exporter] if exporter != "auto" else list(EXPORTERS[fmt])
    attempts: list[str] = []
    source = {"checkpoint": checkpoint.name, "checkpoint_sha256": _sha256(checkpoint)}
    for exp in exporters:
        info = {"format": fmt, "exporter": exp, **source}
        if fmt == "onnx":
            info["opset"] = _OPSET[exp]
        state: dict[str, Any] = {}

        def write(tmp: str, exp=exp, info=info, state=state) -> None:
            meta = artifact_metadata(card, {**info, "tolerance": tolerance})
            try:
                if fmt == "onnx":
                    _write_onnx(model, example, tmp, exp, meta)
                elif fmt == "torchscript":
                    _write_torchscript(model, example, tmp, meta)
                else:
                    _write_pt2(model, example, tmp, meta, decompose=exp == "export+decompose")
                run = _runner_for(fmt, tmp)
                checks = [_compare(name, ref, run(x)) for name, x, ref in eager]
            except Exception as e:
                raise _ExportFailed(f"{exp}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
            state["checks"] = checks
            worst = max(checks, key=lambda c: (not c.max_rel <= tolerance, c.max_rel))
            if not worst.max_rel <= tolerance:  # false for NaN as well
                raise _ExportFailed(
                    f"{exp}: artifact differs from the eager model on {worst.name}: max |Δ| {worst.max_abs:.3g} "
                    f"= {worst.max_rel:.3g} of max |logit| (tolerance {tolerance:g})"
                )

        try:
            atomic_write(out, write, suffix=_SUFFIX[fmt])
        except _ExportFailed as e:
            attempts.append(str(e))
            continue
        return ExportReport(out, fmt, exp, state["checks"], tolerance, notes, attempts)
    raise UserError(f"export of {checkpoint} to {fmt} failed; nothing written to {out}: " + "; ".join(attempts))


class _ExportFailed(Exception):
    """An exporter failed or its artifact did not match; the next exporter may still work."""
