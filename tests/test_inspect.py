"""`volrot inspect-activation` / `volrot.inspection`: sampled SO(3) functions are the layers' real
outputs, files and JSON fields exist, the command runs on tiny trained checkpoints (EquiLoPO and
a plain resnet3d), and the equivariance measurement uses the right fiber laws."""

import json
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from volrot.cli import app
from volrot.so3.sampling import haar
from volrot.so3.wigner import degree_slice, wigner_D

TINY_EQUILOPO = {"arch": "equilopo", "blocks": 1, "channels": 1, "lmax": 1}


def _train(tmp_path_factory, model: dict, name: str):
    from volrot.config import recipe_from_dict
    from volrot.engine.train import train

    out = tmp_path_factory.mktemp(name)
    recipe = recipe_from_dict(
        {
            "model": model,
            "data": {"name": "shapes", "size": 16, "max_samples": 8},
            "optim": {"name": "adam", "lr": 0.005},
            "train": {"epochs": 1, "batch_size": 4, "seed": 0, "device": "cpu", "amp": False, "out": str(out), "name": name},
        }
    )
    return train(recipe, progress=False).best_checkpoint


@pytest.fixture(scope="module")
def equilopo_checkpoint(tmp_path_factory):
    return _train(tmp_path_factory, TINY_EQUILOPO, "equilopo")


def _values_by_trace(coeffs: torch.Tensor, lmax: int, rotations) -> np.ndarray:
    """f(Q) = Σ_l tr(f^l D^l(Q)) per rotation, one degree at a time (independent of the
    flattened sampling rows the inspection uses). coeffs (F, N) -> (F, K)."""
    total = 0
    for l in range(lmax + 1):
        n = 2 * l + 1
        block = coeffs[:, degree_slice(l)].double().reshape(-1, n, n)
        D = wigner_D(l, torch.as_tensor(rotations))  # (K, n, n)
        total = total + torch.einsum("fab,kba->fk", block, D)
    return total.numpy()


def _capture(model, volumes, names):
    seen = {}

    def hook_for(name):
        def hook(module, inputs, output):
            seen.setdefault(name, (inputs[0].detach(), output.detach()))

        return hook

    hooks = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if n in names]
    with torch.no_grad():
        model.eval()(volumes)
    for h in hooks:
        h.remove()
    return seen


def test_sampled_functions_equal_layer_outputs_at_random_rotations(equilopo_checkpoint):
    from volrot.artifacts.checkpoint import load_checkpoint
    from volrot.inspection import inspect_model

    model, _ = load_checkpoint(equilopo_checkpoint)
    torch.manual_seed(1)
    volumes = torch.rand(3, 1, 16, 16, 16)
    rotations = haar(24, seed=5).matrices
    report = inspect_model(model, volumes, functions=40, rotations=rotations, seed=2, batch_size=2)
    assert [s.name for s in report.local] == ["act0.op", "act1.op", "blocks.0.act1.op", "blocks.0.act2.op", "softmax.activation"]
    seen = _capture(model, volumes, {s.name for s in report.local} | {s.name for s in report.softmax})
    for s in report.local:
        x, y = seen[s.name]
        b, c, i, j, k = (torch.as_tensor(s.index[:, a]) for a in range(5))
        f_in = x[b, c, :, i, j, k]
        f_out = y[b, c, :, i, j, k]
        np.testing.assert_allclose(s.input_values, _values_by_trace(f_in, s.lmax, rotations), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(s.output_values, _values_by_trace(f_out, s.keep, rotations), atol=2e-5, rtol=1e-4)
        if s.keep == 2 * s.lmax:  # untruncated: the output IS n·P(f/n) at every rotation
            np.testing.assert_allclose(s.output_values, s.polynomial_values, atol=2e-5, rtol=1e-4)
        else:  # act0 keeps degree 3 of 4: the plot shows the truncation
            assert s.stats()["truncation_rms"] > 1e-4
    for s in report.softmax:
        x, out = seen[s.name]
        b, c, i, j, k = (torch.as_tensor(s.index[:, a]) for a in range(5))
        np.testing.assert_allclose(s.softmax, out[b, c, i, j, k].double().numpy(), rtol=1e-5, atol=1e-7)
        values = _values_by_trace(x[b, c, :, i, j, k], s.lmax, rotations)
        np.testing.assert_allclose(s.sampled_max, values.max(1), atol=2e-5, rtol=1e-4)


LOCAL_FIELDS = {
    "layer", "coefficients", "input_lmax", "output_lmax", "full_lmax", "functions_total", "functions_sampled",
    "rotations", "mse", "nmse", "mse_polynomial", "truncation_rms", "wrong_sign_fraction",
    "negative_output_for_positive_input", "positive_output_for_negative_input", "input_mean", "input_std",
    "mean_over_3std", "regimes", "sampled_regimes",
}  # fmt: skip
SOFTMAX_FIELDS = {
    "layer", "input_lmax", "functions_sampled", "positive_max_fraction", "pearson_positive_max",
    "mean_ratio_positive_max", "mean_abs_softmax_negative_max", "above_sampled_max_fraction",
}  # fmt: skip
LAYER_FIELDS = {"name", "module_type", "fiber", "law", "exact_law", "shape", "rel_error", "max_rel_error", "invariant_rel_error", "order"}


def test_command_on_tiny_trained_equilopo_writes_figures_and_documented_json(equilopo_checkpoint, tmp_path):
    out = tmp_path / "inspect"
    start = time.perf_counter()
    res = CliRunner().invoke(
        app, ["inspect-activation", str(equilopo_checkpoint), "--samples", "2", "--device", "cpu", "--out", str(out)]
    )
    elapsed = time.perf_counter() - start
    print(f"inspect-activation on a tiny EquiLoPO checkpoint (CPU): {elapsed:.1f} s")
    assert res.exit_code == 0, res.output
    assert "local SO(3) activations" in res.output and "feature equivariance" in res.output
    d = json.loads((out / "inspect.json").read_text())
    assert set(d) == {"meta", "local_activations", "softmax", "global_gates", "equivariance", "files"}
    assert {"checkpoint", "arch", "data", "split", "samples", "seed", "functions", "rotations", "layer", "elapsed_s"} <= set(d["meta"])
    assert d["meta"]["rotations"]["method"] == "so3-grid" and d["meta"]["rotations"]["count"] > 1000
    assert len(d["local_activations"]) == 5 and len(d["softmax"]) == 1 and d["global_gates"] == []
    for s in d["local_activations"]:
        assert set(s) == LOCAL_FIELDS
        assert abs(sum(s["regimes"].values()) - 1) < 1e-9
        assert 0 <= s["wrong_sign_fraction"] <= 1 and s["mse"] >= 0
    assert set(d["softmax"][0]) == SOFTMAX_FIELDS
    eq = d["equivariance"]
    assert eq["rotation"]["angle_deg"] == pytest.approx(90.0)
    assert eq["logits_rel_error"] < 1e-4
    for layer in eq["layers"]:
        assert set(layer) == LAYER_FIELDS
        assert layer["exact_law"] and layer["rel_error"] < 1e-4, layer
    assert {layer["fiber"] for layer in eq["layers"]} == {"so3", "spatial"}
    for name in d["files"].values():
        assert (out / name).is_file() and (out / name).stat().st_size > 10_000
    assert "montage.png" in d["files"].values() and "activation_blocks.0.act1.op.png" in d["files"].values()

    bad = CliRunner().invoke(app, ["inspect-activation", str(equilopo_checkpoint), "--layer", "nope", "--out", str(out)])
    assert bad.exit_code == 2 and "matches no layer" in bad.output


def test_layer_filter_selects_one_activation(equilopo_checkpoint):
    from volrot.artifacts.checkpoint import load_checkpoint
    from volrot.inspection import inspect_model

    model, _ = load_checkpoint(equilopo_checkpoint)
    report = inspect_model(model, torch.rand(1, 1, 16, 16, 16), layer="blocks.0.act2", functions=8, rotations=haar(8).matrices)
    assert [s.name for s in report.local] == ["blocks.0.act2.op"] and report.softmax == []


def test_plain_resnet3d_gets_montage_and_spatial_error(tmp_path_factory, tmp_path):
    from volrot.inspection import inspect_checkpoint

    ckpt = _train(tmp_path_factory, {"arch": "resnet3d", "width": 2}, "resnet")
    report, paths = inspect_checkpoint(ckpt, samples=1, device="cpu", out=tmp_path)
    d = json.loads(paths["inspect.json"].read_text())
    assert d["local_activations"] == [] and d["softmax"] == []
    assert set(paths) == {"montage", "equivariance", "inspect.json"} and all(p.is_file() for p in paths.values())
    layers = d["equivariance"]["layers"]
    assert layers[0]["name"] == "stem.0" and all(r["fiber"] == "spatial" and not r["exact_law"] for r in layers)
    # a plain CNN's features do not rotate with the input: the error is measured, and large
    assert all(np.isfinite(r["rel_error"]) for r in layers) and max(r["rel_error"] for r in layers) > 0.05


def test_fiber_laws_are_the_ones_that_hold():
    """gcnn (regular: permuted group axis), EquiLoPO (Wigner on coefficient columns) and steerable
    (irreps: D_rho) features
    are equivariant only with their own law; spatial rotation alone leaves an O(1) error."""
    from volrot.inspection.equivariance import feature_layers, measure_equivariance, z90
    from volrot.so3.fields import Scalar
    from volrot.models import create_model
    from volrot.so3.volume import rotate_exact

    torch.manual_seed(0)
    x = torch.rand(1, 1, 12, 12, 12)
    g = z90()
    cases = (("gcnn", {"width": 4, "group": "D4"}), ("equilopo", {"blocks": 1, "channels": 1}), ("steerable", {"width": 2, "lmax": 1}))
    for arch, opts in cases:
        model = create_model(arch, num_classes=2, **opts).eval()
        r = measure_equivariance(model, x)
        assert max(layer.rel_error for layer in r.layers) < 1e-5, arch
        name, module, fiber = feature_layers(model)[2]
        seen = _capture(model, torch.cat([x, rotate_exact(x, g)]), {name})
        out = seen[name][1]
        spatial_only = Scalar().transform(out[:1], g)
        # scalar channels rotate spatially only, so the gap is smallest for steerable (~3e-2)
        assert (out[1:] - spatial_only).norm() / out[1:].norm() > 1e-2, arch


def test_global_activation_model_reports_gates_and_softmax_panels(tmp_path):
    from volrot.inspection import inspect_model, write_report
    from volrot.models import create_model

    torch.manual_seed(0)
    model = create_model("equilopo", num_classes=2, blocks=1, channels=1, activation="global")
    report = inspect_model(model, torch.rand(2, 1, 12, 12, 12), layer="act0", functions=30, rotations=haar(16).matrices)
    assert [g.name for g in report.gates] == ["act0.op"]
    assert ((report.gates[0].gates > 0) & (report.gates[0].gates < 1)).all()  # sigmoid gates
    assert [s.name for s in report.softmax] == ["act0.op.softmax"]  # the SoftMax inside the gate
    assert [s.name for s in report.local] == ["act0.op.softmax.activation"]
    assert max(layer.rel_error for layer in report.equivariance.layers) < 1e-4
    paths = write_report(report, tmp_path)
    d = json.loads(paths["inspect.json"].read_text())
    assert {"layer", "gate_mean", "gate_p5", "gate_median", "gate_p95", "closed_fraction"} <= set(d["global_gates"][0])
    assert paths["softmax act0.op.softmax"].is_file()
