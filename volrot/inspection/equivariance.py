"""Feature-level equivariance of any volrot model under one exact grid rotation g.

One forward pass of the batch [x, g·x] (eval mode) with forward hooks on the model's feature
layers (`feature_layers`: the layers the model declares, with their field laws from
`volrot.so3.fields`); per layer the hook compares F(g·x) with T_g F(x) (`Field.transform`)
and the invariant pooled maps (`Field.invariant`) with their spatial rotation, and keeps the
per-channel scalar maps of the first layers for the montage (F(x), F(g·x) and F(g·x) rotated
back by g⁻¹, which must equal F(x) for an equivariant layer).

Errors are relative: ‖F(g·x) − T_g F(x)‖ / ‖T_g F(x)‖ over the whole layer output (`rel_error`),
and max |·| / max |T_g F(x)| (`max_rel_error`), both from `volrot.so3.check.relative_errors`.
The JSON keeps the name `fiber` for the law's kind (so3 | regular | irreps | spatial).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from volrot.models.registry import symmetry_of
from volrot.so3.check import declared_layers, relative_errors, run_pair
from volrot.so3.fields import Field, Scalar
from volrot.so3.groups import CubeElement, cube_group
from volrot.so3.volume import rotate_exact


def z90() -> CubeElement:
    """The +90° rotation about z (the last spatial axis): in every cube subgroup volrot uses."""
    return cube_group("O").element(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]))


def feature_layers(model: nn.Module) -> list[tuple[str, nn.Module, Field]]:
    """The layers whose outputs are inspected, with their field law.

    The layers a model declares (`model.equivariant_layers()`, see `volrot.so3.check`). A model
    that declares none (a plain CNN): its 3D convs and residual blocks as scalar fields, an
    exact law only when the model declares a symmetry (otherwise the hypothesis "features rotate
    with the input", reported as such).
    """
    layers = declared_layers(model)
    if layers:
        return layers
    law = Scalar(exact=not symmetry_of(model).trivial)
    out, convs = [], []
    for name, m in model.named_modules():
        kind = type(m).__name__
        is_conv = isinstance(m, nn.Conv3d) or "Conv" in kind
        if not (is_conv or "Block" in kind or "Bottleneck" in kind):
            continue
        if any(name.startswith(c + ".") for c in convs):
            continue  # the inner conv of a conv wrapper
        if is_conv:
            convs.append(name)
        out.append((name, m, law))
    return out


@dataclass
class LayerEquivariance:
    name: str
    module_type: str
    fiber: str
    law: str
    exact_law: bool
    shape: list
    rel_error: float
    max_rel_error: float
    invariant_rel_error: float
    order: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class EquivarianceResult:
    """`layers` in execution order; `montage[name]` = (F(x), F(g·x), g⁻¹F(g·x)) scalar maps of the
    first channels, each (C', D, H, W) numpy; `input` = (x, g·x) first channel."""

    rotation: CubeElement
    layers: list[LayerEquivariance]
    logits_rel_error: float
    input: tuple
    montage: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rotation": {"matrix": self.rotation.matrix.tolist(), "angle_deg": self.rotation.angle_deg, "label": "z+90"},
            "logits_rel_error": self.logits_rel_error,
            "layers": [layer.to_dict() for layer in self.layers],
        }


@torch.no_grad()
def measure_equivariance(
    model: nn.Module,
    x: torch.Tensor,
    g: CubeElement | None = None,
    *,
    montage_layers: int = 4,
    montage_channels: int = 3,
) -> EquivarianceResult:
    """Compare every feature layer's output on g·x with its transformed output on x.

    `x`: one volume `(C, D, H, W)` or `(1, C, D, H, W)` on the model's device; the model is run
    in eval mode on the batch [x, g·x] (`volrot.so3.check.run_pair`).
    """
    g = g or z90()
    g_inv = cube_group("Oh").inverse_of(g)
    x = x if x.dim() == 5 else x.unsqueeze(0)
    results: list[LayerEquivariance] = []
    montage: dict[str, tuple] = {}

    def record(name, module, law, a, b):
        a, b = a.float().cpu(), b.float().cpu()
        rel, rel_max = relative_errors(b, law.transform(a, g))
        inv_rel, _ = relative_errors(law.invariant(b), rotate_exact(law.invariant(a), g))
        results.append(
            LayerEquivariance(
                name, type(module).__name__, law.kind, law.describe(), law.exact, list(a.shape[1:]),
                rel, rel_max, inv_rel, len(results),
            )
        )  # fmt: skip
        if len(montage) < montage_layers:
            fa = law.scalar_map(a)[0, :montage_channels]
            fb = law.scalar_map(b)[0, :montage_channels]
            montage[name] = (fa.numpy(), fb.numpy(), rotate_exact(fb, g_inv).numpy())

    was_training = model.training
    model.eval()
    try:
        logits = run_pair(model, x, g, feature_layers(model), record).float().cpu()
    finally:
        model.train(was_training)
    logit_err, _ = relative_errors(logits[1:2], logits[:1])
    inp = (x[0, 0].float().cpu().numpy(), rotate_exact(x, g)[0, 0].float().cpu().numpy())
    return EquivarianceResult(g, results, logit_err, inp, montage)
