"""The one equivariance / invariance check of volrot (in the spirit of e3nn's
`e3nn/util/test.py::assert_equivariant`).

Every error is *relative*: `relative_error(actual, expected)` = max|actual − expected| /
max|expected|, computed in float64 (0 when both are 0). Tolerances depend on the dtype the
model computed in (`TOLERANCES`): exact grid symmetries hold to float rounding, so a float32
model passes at 1e-4 and a float64 one at 1e-10.

* `invariance_errors(model, x, elements)`: per cube element g, the relative change of the logits
  f(g·x) against f(x). In eval mode the rotated copies go through in chunks of one batch; in
  train mode every rotated batch goes alone (batch statistics are then its own, as in training).
* `equivariance_error(fn, x, g, field_in, field_out)`: fn(T_g x) against T_g fn(x) for one layer.
* `layer_equivariance_errors(model, x, g)`: every layer the model declares
  (`model.equivariant_layers()`: (name, module, field law)) checked from one forward pass of
  the batch [x, g·x] with forward hooks (`run_pair`): F(g·x) against T_g F(x) (`field_error`). Batch norms in train mode see
  the same statistics for both halves (every field law preserves per-channel moments).
* `assert_invariant` / `assert_equivariant`: the same numbers, raising `AssertionError` above
  the tolerance with the worst element named.
* `input_sensitivity(model, x, y)`: relative change of the logits between two different inputs:
  a check that invariance is not vacuous (a constant model is perfectly invariant).

Used by the tests (`tests/test_models.py`), inspection (`volrot.inspection.equivariance`), the
benchmarks (`volrot.benchmark.invariance_error`) and `volrot eval-rotated` (`rel_dlogit`).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from volrot.so3.fields import Field
from volrot.so3.groups import CubeElement
from volrot.so3.volume import rotate_exact

#: relative tolerance of an exact (grid) symmetry per compute dtype
TOLERANCES = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


def tolerance(dtype: torch.dtype) -> float:
    """The relative tolerance for results computed in `dtype`."""
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])


def relative_error(actual, expected) -> float:
    """max|actual − expected| / max|expected| in float64; 0 when both vanish, inf when only the
    reference does. Tensors or numpy arrays."""
    a = torch.as_tensor(actual).detach().double()
    e = torch.as_tensor(expected).detach().double()
    if e.numel() == 0:
        return 0.0
    diff = float((a - e).abs().max())
    scale = float(e.abs().max())
    if scale > 0:
        return diff / scale
    return 0.0 if diff == 0 else math.inf


def relative_errors(actual, expected) -> tuple[float, float]:
    """(‖a − e‖ / ‖e‖, max|a − e| / max|e|) in float64: the norm-relative and the max-relative
    error (inspection reports both); 0/0 counts as 0."""
    a = torch.as_tensor(actual).detach().double()
    e = torch.as_tensor(expected).detach().double()
    d = float((a - e).norm())
    ne = float(e.norm())
    rel = d / ne if ne > 0 else d
    return rel, relative_error(a, e)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


@torch.no_grad()
def invariance_errors(model: nn.Module, x: torch.Tensor, elements: Sequence[CubeElement]) -> list[float]:
    """Relative logit change max|f(g·x) − f(x)| / max|f(x)| for each element g, in the model's
    current mode (eval: rotated copies batched; train: one forward per element)."""
    ref = _logits(model, x)
    if model.training:
        return [relative_error(_logits(model, rotate_exact(x, g)), ref) for g in elements]
    errors: list[float] = []
    per_pass = max(1, 8 // max(1, x.shape[0]))
    elements = list(elements)
    for start in range(0, len(elements), per_pass):
        chunk = elements[start : start + per_pass]
        out = _logits(model, torch.cat([rotate_exact(x, g) for g in chunk]))
        errors += [relative_error(o, ref) for o in out.split(x.shape[0])]
    return errors


def invariance_error(model: nn.Module, x: torch.Tensor, elements: Sequence[CubeElement]) -> float:
    """The largest of `invariance_errors` (0 for no elements)."""
    return max(invariance_errors(model, x, elements), default=0.0)


def assert_invariant(
    model: nn.Module, x: torch.Tensor, elements: Sequence[CubeElement], tol: float | None = None
) -> float:
    """Raise `AssertionError` when some element changes the logits by more than `tol`
    (default: `tolerance` of x's dtype); returns the largest error."""
    errors = invariance_errors(model, x, elements)
    tol = tolerance(x.dtype) if tol is None else tol
    worst = max(range(len(errors)), key=errors.__getitem__, default=None)
    if worst is not None and not errors[worst] <= tol:
        g = list(elements)[worst]
        raise AssertionError(
            f"logits not invariant: relative error {errors[worst]:.3g} > {tol:.1g} under element "
            f"{g.index} (matrix {g.matrix.tolist()}, angle {g.angle_deg:.0f}°"
            f"{', improper' if not g.is_rotation else ''})"
        )
    return max(errors, default=0.0)


@torch.no_grad()
def equivariance_error(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, g: CubeElement, field_in: Field, field_out: Field
) -> float:
    """Relative error of fn(T_g x) against T_g fn(x) for one function (a layer)."""
    return relative_error(fn(field_in.transform(x, g)), field_out.transform(fn(x), g))


def assert_equivariant(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    elements: Iterable[CubeElement],
    field_in: Field,
    field_out: Field,
    tol: float | None = None,
) -> float:
    """`equivariance_error` for each element; `AssertionError` above `tol`. Returns the largest."""
    tol = tolerance(x.dtype) if tol is None else tol
    worst = 0.0
    for g in elements:
        err = equivariance_error(fn, x, g, field_in, field_out)
        if not err <= tol:
            raise AssertionError(f"not equivariant: relative error {err:.3g} > {tol:.1g} under element {g.index} ({g.matrix.tolist()})")
        worst = max(worst, err)
    return worst


def declared_layers(model: nn.Module) -> list[tuple[str, nn.Module, Field]]:
    """The (name, module, field law) of every layer the model declares equivariant
    (`model.equivariant_layers()`); [] for a model that declares none."""
    declare = getattr(model, "equivariant_layers", None)
    return list(declare()) if callable(declare) else []


@torch.no_grad()
def run_pair(model: nn.Module, x: torch.Tensor, g: CubeElement, layers, on_output) -> torch.Tensor:
    """Run the batch [x, g·x] once with forward hooks on `layers` ((name, module, field)
    triples); at each layer's first call `on_output(name, module, field, F(x), F(g·x))` is called
    (outputs detached, in execution order). Returns the logits of the batch."""
    seen: set[str] = set()
    b = x.shape[0]

    def hook_for(name, field):
        def hook(module, inputs, output):
            if name not in seen and torch.is_tensor(output):
                seen.add(name)
                out = output.detach()
                on_output(name, module, field, out[:b], out[b:])

        return hook

    handles = [m.register_forward_hook(hook_for(name, field)) for name, m, field in layers]
    try:
        return model(torch.cat([x, rotate_exact(x, g)]))
    finally:
        for h in handles:
            h.remove()


def field_error(field: Field, out: torch.Tensor, rotated_out: torch.Tensor, g: CubeElement) -> float:
    """Relative error of a layer's output on g·x against T_g of its output on x (float64)."""
    return relative_error(rotated_out.double(), field.transform(out.double(), g))


def layer_equivariance_errors(model: nn.Module, x: torch.Tensor, g: CubeElement) -> dict[str, float]:
    """For every declared equivariant layer (in execution order): relative error of F(g·x)
    against T_g F(x), from one forward pass of [x, g·x] (in the model's current mode)."""
    errors: dict[str, float] = {}

    def record(name, module, field, a, b):
        errors[name] = field_error(field, a, b, g)

    run_pair(model, x, g, declared_layers(model), record)
    return errors


@torch.no_grad()
def input_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """max|f(x) − f(y)| / max|f(x)| for two different inputs: 0 for a model that ignores its
    input (whose invariance would then prove nothing)."""
    return relative_error(_logits(model, y), _logits(model, x))
