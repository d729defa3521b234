"""One test harness for every registered architecture (as timm's `tests/test_models.py`).

Parametrized over `list_models()` × tiny configs (`CONFIGS`, 8³–12³ volumes) × train/eval mode:

- forward/backward, and every parameter gets a (non-zero) gradient;
- the logits are invariant under the model's *declared* group (`symmetry_of(model)`), checked by
  `volrot.so3.check.assert_invariant` at the float32 tolerance;
- every declared equivariant layer (`model.equivariant_layers()`) follows its field law;
- the logits depend on the input (non-vacuity: a constant model is perfectly invariant);
- an element outside the declared group changes the logits by far more than exact symmetry
  does (negative control: the reflections for an SO(3) model, the elements outside D4, any
  grid element for resnet3d, an off-grid rotation for a model exact only on Oh);
- a checkpoint round trip gives identical logits.

A new arch gets all of it by registering: `test_every_registered_arch_has_tiny_configs` fails
until it has an entry in `CONFIGS`. The meta-tests at the end break a model on purpose and
check that the harness fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from volrot.models import create_model, list_models, symmetry_of
from volrot.so3.check import (
    assert_invariant,
    declared_layers,
    input_sensitivity,
    invariance_error,
    invariance_errors,
    layer_equivariance_errors,
    relative_error,
    tolerance,
)
from volrot.so3.groups import cube_group
from volrot.so3.volume import rotate_trilinear

from model_helpers import calibrate

#: arch -> tiny configs (options, cubic input size)
CONFIGS: dict[str, list[tuple[dict, int]]] = {
    "resnet3d": [({"width": 2}, 8)],
    "gcnn": [
        ({"group": "O", "width": 4}, 12),
        ({"group": "D4", "width": 4}, 12),
        ({"group": "Oh", "width": 2}, 9),
        ({"group": "D4h", "width": 4}, 11),
    ],
    "gmr": [
        ({"width": 2, "kernel_sizes": [3, 3, 3, 3]}, 12),
        ({"width": 2, "kernel_sizes": [7, 7, 5, 5]}, 13),
        ({"width": 2, "kernel_sizes": [5, 5, 3, 3], "conv_form": "shells"}, 9),
    ],
    "steerable": [
        ({"width": 1, "lmax": 2, "kernel_size": 5, "pooling": "blur"}, 10),
        ({"width": 1, "lmax": 1, "kernel_size": 3, "pooling": "avg"}, 9),
        ({"width": 1, "lmax": 1, "kernel_size": 3, "reflections": True}, 10),
    ],
    "equilopo": [
        ({"channels": 2, "blocks": 1, "activation": "local", "coefficients": "adaptive"}, 9),
        ({"channels": 2, "blocks": 2, "activation": "local", "coefficients": "constant"}, 9),
        ({"channels": 1, "blocks": 8, "activation": "local", "coefficients": "trainable"}, 10),
        ({"channels": 2, "blocks": 1, "activation": "global", "coefficients": "trainable"}, 9),
        ({"channels": 2, "blocks": 2, "activation": "global", "coefficients": "adaptive"}, 8),
        ({"channels": 1, "blocks": 8, "activation": "global", "coefficients": "constant"}, 9),
    ],
}
CASES = [
    pytest.param(arch, opts, size, id=f"{arch}-" + "-".join(f"{k}={v}" for k, v in opts.items()).replace(" ", ""))
    for arch in sorted(CONFIGS)
    for opts, size in CONFIGS[arch]
]
MODES = ["train", "eval"]
NUM_CLASSES = 3
#: a clearly broken symmetry: 100× the float32 tolerance of an exact one
CONTROL_ERROR = 1e-2
#: field laws are checked in float64; some constants stay float32-accurate (e3nn's Wigner-D
#: tables, EquiLoPO's resampling matrices), so errors are ~1e-7 there and ~1e-15 elsewhere
FIELD_TOLERANCE = 1e-5


def volume(batch: int, size: int, seed: int) -> torch.Tensor:
    """A structured, asymmetric random volume (upsampled noise plus a little fine noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 1, 5, 5, 5, generator=g)
    fine = 0.1 * torch.randn(batch, 1, size, size, size, generator=g)
    return F.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=True) + fine


def build(arch: str, opts: dict, size: int, mode: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=NUM_CLASSES, **opts)
    calibrate(model, 2.0 * volume(4, size, seed=100) + 0.5)
    return model.train(mode == "train")


def assert_depends_on_input(model, x, other) -> float:
    sensitivity = input_sensitivity(model, x, other)
    assert sensitivity > 1e-3, f"logits hardly depend on the input (relative change {sensitivity:.2e})"
    return sensitivity


def negative_controls(model, x) -> list[tuple[str, list[float]]]:
    """(what, relative logit change per element) for the transformations outside the declared
    group: the grid rotations outside it and the improper grid elements outside it (each kind
    that exists); an off-grid rotation when the group holds all 48 grid elements but the model
    is not built for other rotations; [] for a continuous O(3) symmetry (nothing is outside)."""
    symmetry = symmetry_of(model)
    outside = symmetry.group.outside(cube_group("Oh"))
    controls = []
    for what, elements in (
        ("grid rotations", [g for g in outside if g.is_rotation]),
        ("improper grid elements", [g for g in outside if not g.is_rotation]),
    ):
        if elements:
            controls.append((f"{len(elements)} {what} outside {symmetry.group.name}", invariance_errors(model, x, elements)))
    if outside or symmetry.continuous:
        return controls
    # exact on all 48 grid elements, not built for other rotations: 45° about z, interpolated
    # (the reference goes through the same interpolation with the identity)
    turn = Rotation.from_rotvec([0.0, 0.0, math.pi / 4]).as_matrix()
    with torch.no_grad():
        ref = model(rotate_trilinear(x, np.eye(3))[0])
        turned = model(rotate_trilinear(x, turn)[0])
    return [("45° about z (trilinear)", [relative_error(turned, ref)])]


# --------------------------------------------------------------------------- the harness


def test_every_registered_arch_has_tiny_configs():
    assert sorted(CONFIGS) == list_models(), "add tiny configs for every registered arch to CONFIGS"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch,opts,size", CASES)
def test_forward_backward_every_parameter_gets_a_gradient(arch, opts, size, mode):
    model = build(arch, opts, size, mode)
    x = volume(2, size, seed=1)
    out = model(x)
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch,opts,size", CASES)
def test_logits_invariant_under_declared_group_and_depend_on_input(arch, opts, size, mode):
    model = build(arch, opts, size, mode)
    x = volume(2, size, seed=3)
    group = symmetry_of(model).group
    err = assert_invariant(model, x, group.elements, tol=tolerance(torch.float32))
    print(f"{arch} {opts} {mode}: invariance error over {group.name} ({group.order}) = {err:.2e}")
    assert_depends_on_input(model, x, volume(2, size, seed=4))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch,opts,size", CASES)
def test_declared_fields_are_equivariant(arch, opts, size, mode):
    """In float64: in train mode a batch norm over the few voxels of the last stage amplifies
    float32 rounding (gmr at 12³: up to ~1e-2 relative at the last block; 1e-11 in float64)."""
    model = build(arch, opts, size, mode).double()
    symmetry = symmetry_of(model)
    layers = declared_layers(model)
    if symmetry.trivial:
        assert layers == [], "a model without symmetry declares no equivariant layers"
        return
    assert layers, f"{arch} declares {symmetry.name} but no equivariant layers"
    x = volume(1, size, seed=5).double()
    group = symmetry.group
    # a generator (z+90), a 3-fold rotation (ops of length ≥ 2) and the last element (an
    # improper one where the group has them)
    elements = {group.element(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])).index, group.order // 2, group.order - 1}
    for i in sorted(elements):
        errors = layer_equivariance_errors(model, x, group[i])
        assert set(errors) == {name for name, _, _ in layers}, "every declared layer runs"
        worst = max(errors, key=errors.get)
        assert errors[worst] <= FIELD_TOLERANCE, f"{worst}: relative error {errors[worst]:.2e} under element {i} of {group.name}"


@pytest.mark.parametrize("arch,opts,size", CASES)
def test_every_element_outside_the_declared_group_changes_the_logits(arch, opts, size):
    """Every element of each kind outside the group moves the logits far beyond what the
    declared group does: 100× its measured error, and at least 1e-3 (a discrete symmetry) or
    the float32 tolerance (a continuous one: untrained SO(3) models are nearly achiral, a
    mirror image moves their logits only 1–60 % as much as a different input does)."""
    model = build(arch, opts, size, "eval")
    x = volume(2, size, seed=6)
    symmetry = symmetry_of(model)
    controls = negative_controls(model, x)
    if not controls:
        pytest.skip(f"{symmetry.name}: no rotation or reflection lies outside the declared group")
    inside = invariance_error(model, x, symmetry.group.elements)
    bar = max(100 * inside, tolerance(torch.float32) if symmetry.continuous else 1e-3)
    sensitivity = input_sensitivity(model, x, volume(2, size, seed=4))
    for what, errors in controls:
        print(f"{arch} {opts}: {what}: min {min(errors):.2e}; in the group {inside:.1e}; other input {sensitivity:.2e}")
        assert min(errors) > bar, f"{what}: relative logit change only {min(errors):.2e} (bar {bar:.1e})"


@pytest.mark.parametrize("arch,opts,size", CASES)
def test_checkpoint_round_trip_gives_identical_logits(arch, opts, size, tmp_path):
    from volrot import load_model
    from volrot.artifacts.checkpoint import checkpoint_metadata, save_checkpoint

    model = build(arch, opts, size, "train")
    x = volume(2, size, seed=7)
    with torch.no_grad():
        model(x)  # running statistics away from their initial values
    path = tmp_path / "model.safetensors"
    card = checkpoint_metadata(
        model,
        class_names=[f"c{k}" for k in range(NUM_CLASSES)],
        input={"shape": [1, size, size, size], "dtype": "float32"},
        preprocessing={"source": "generated", "size": size, "intensity": "none", "scale": 1.0, "offset": 0.0},
    )
    save_checkpoint(path, model.eval(), card)
    loaded = load_model(path).model
    assert loaded.volrot_arch == arch and symmetry_of(loaded) == symmetry_of(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_one_epoch_of_training_then_the_checkpoint_keeps_the_symmetry(arch, tiny_recipe):
    """The real trainer on a few built-in shapes (16³); the best checkpoint rebuilds into the
    same arch, options and declared symmetry, invariant under its group."""
    import json

    from volrot import load_model
    from volrot.engine.train import train

    opts, _ = CONFIGS[arch][0]
    recipe = tiny_recipe(
        model={"arch": arch, **opts},
        data={"max_samples": 16},
        train={"epochs": 1, "batch_size": 8, "name": f"{arch}-smoke"},
    )
    recipe.model.options = dict(opts)  # without the fixture's default resnet3d width
    result = train(recipe, progress=False)
    assert result.completed and set(result.metrics) >= {"val", "test"}
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1
    assert math.isfinite(records[0]["train_loss"]) and math.isfinite(records[0]["val_loss"])
    model = load_model(result.best_checkpoint).model
    assert model.volrot_arch == arch
    assert {k: model.volrot_config[k] for k in opts} == {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
    symmetry = symmetry_of(model)
    assert symmetry == create_model(arch, num_classes=2, **opts).volrot_symmetry
    assert_invariant(model, volume(2, 16, seed=12), symmetry.group.elements, tol=1e-4)


# --------------------------------------------------------------------------- the harness fails


class _Constant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(NUM_CLASSES))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)


def test_harness_rejects_a_constant_model():
    """A constant model is invariant under everything; the non-vacuity check catches it."""
    model, x = _Constant(), volume(2, 8, seed=8)
    assert assert_invariant(model, x, cube_group("Oh").elements) == 0.0
    with pytest.raises(AssertionError, match="hardly depend on the input"):
        assert_depends_on_input(model, x, volume(2, 8, seed=9))


def test_harness_rejects_asymmetric_pooling(monkeypatch):
    """gcnn with a plain 2×2×2 stride-2 pooling (it drops the last slice of odd sizes) is no
    longer invariant: the declared-group check fails with the offending element."""
    import volrot.models.gcnn as gcnn

    monkeypatch.setattr(gcnn, "symmetric_downsample", lambda x: F.avg_pool3d(x, 2, 2))
    model = build("gcnn", {"group": "O", "width": 4}, 12, "eval")
    with pytest.raises(AssertionError, match="logits not invariant: relative error"):
        assert_invariant(model, volume(2, 12, seed=10), cube_group("O").elements)


def test_harness_rejects_a_wrong_field_law():
    """Declaring gcnn's regular fields as plain scalar fields is caught layer by layer."""
    from volrot.so3.fields import Scalar

    model = build("gcnn", {"group": "D4", "width": 4}, 8, "eval")
    wrong = [(name, m, Scalar()) for name, m, _ in model.equivariant_layers()]
    model.equivariant_layers = lambda: wrong
    errors = layer_equivariance_errors(model, volume(1, 8, seed=11), cube_group("D4")[1])
    assert min(errors.values()) > CONTROL_ERROR, errors


def test_prediction_first_then_training_in_one_process():
    """Module-level caches (bases, weights) filled first under `torch.inference_mode` (a script
    that predicts, then trains) must not hand inference tensors to autograd: a fresh process
    runs every arch's first forward under inference_mode, then trains each."""
    import subprocess
    import sys

    cases = {arch: configs[0] for arch, configs in CONFIGS.items()}
    code = f"""
import torch
from volrot.models import create_model
cases = {cases!r}
models = {{}}
for arch, (opts, size) in cases.items():
    torch.manual_seed(0)
    m = create_model(arch, num_classes=3, in_channels=1, **opts).eval()
    with torch.inference_mode():
        m(torch.randn(2, 1, size, size, size))
    models[arch] = (m, size)
for arch, (m, size) in models.items():
    m.train()
    m(torch.randn(2, 1, size, size, size)).sum().backward()
    create_model(arch, num_classes=3, in_channels=1, **cases[arch][0])(torch.randn(2, 1, size, size, size)).sum().backward()
print("ok", len(models))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"ok {len(cases)}"
