"""The benchmark harness at a tiny size: JSON fields and ratios are there and positive.

No timing is asserted (the figures are only as quiet as the machine); only that the harness
measures what it says, writes it where it says and renders the README table from it.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from volrot.benchmark import (
    SCHEMA,
    default_result_path,
    hardware_slug,
    load_reports,
    peak_memory,
    render_table,
    time_calls,
)

REPO = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    bench = _load_script("bench")
    bench.main([
        "equilopo", "--set", "blocks=1", "--set", "channels=2", "--batch", "2", "--size", "8",
        "--repeats", "1", "--warmup", "0", "--reference-width", "4", "--invariance-samples", "1",
        "--out", str(out),
    ])
    return out, json.loads(out.read_text())


def _check_measured(m: dict, arch: str) -> None:
    assert m["arch"] == arch
    assert m["parameters"] > 0
    assert m["flops_forward_per_batch"] > 0 and m["flops_forward_per_sample"] > 0
    for key in ("inference_s", "train_step_s"):
        t = m[key]
        assert len(t["samples"]) == 1 and t["min"] <= t["median"] <= t["max"] and t["min"] > 0
    for key in ("inference_memory", "train_memory"):
        assert m[key]["peak_bytes"] >= 0 and m[key]["method"]


def test_tiny_run_writes_complete_json(tiny_report):
    path, r = tiny_report
    assert r["schema"] == SCHEMA and r["batch"] == 2 and r["size"] == 8 and r["precision"] == "fp32"
    assert r["input_shape"] == [2, 1, 8, 8, 8]
    assert r["device"]["type"] == "cpu" and r["device"]["cpu"] and r["device"]["torch_threads"] == torch.get_num_threads()
    _check_measured(r["model"], "equilopo")
    _check_measured(r["reference"], "resnet3d")
    assert r["model"]["config"]["blocks"] == 1 and r["model"]["config"]["channels"] == 2
    assert r["model"]["config"]["activation"] == "local"  # the rest comes from the adrenal recipe
    assert r["reference"]["config"]["width"] == 4
    for key in ("inference_s", "train_step_s", "flops_forward", "parameters"):
        assert r["ratio_to_reference"][key] > 0, key
    assert 0 <= r["model"]["invariance_error"] <= 1e-4
    assert r["reference"]["invariance_error"] is None  # resnet3d claims no symmetry


def test_reference_defaults_to_recipe_width(tiny_report):
    from volrot.benchmark import reference_options

    assert reference_options() == {"width": 64, "depth": 18}


def test_result_file_name_names_the_hardware(tiny_report):
    _, r = tiny_report
    name = default_result_path(r, "benchmarks/results").name
    assert name.startswith("equilopo_cpu-") and name.endswith("_b2_s8_1blk.json")
    assert hardware_slug({"type": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "cpu": "x"}) == "cuda-h100-80gb-hbm3"


def test_table_renders_from_result_files(tiny_report, tmp_path):
    path, _ = tiny_report
    (tmp_path / "other.json").write_text(json.dumps({"results": []}))  # another script's JSON: skipped
    reports = load_reports([path, tmp_path / "other.json"])
    assert len(reports) == 1
    table = render_table(reports).splitlines()
    assert len(table) == 4 and table[0].startswith("| hardware")
    assert "equilopo 1 blk" in table[2] and "resnet3d width 4 (reference)" in table[3]


def test_time_calls_warms_up_then_times():
    calls = []
    t = time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(t.samples) == 3 and t.warmup == 2


def test_peak_memory_sees_an_allocation():
    mem = peak_memory(lambda: torch.ones(4 * 2**20, dtype=torch.uint8).sum())
    assert mem["peak_bytes"] >= 4 * 2**20 * 0.9, mem


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_gpu_is_a_user_error():
    from volrot.benchmark import run_benchmark
    from volrot.errors import UserError

    with pytest.raises(UserError, match="no CUDA device"):
        run_benchmark("resnet3d", {"width": 2}, device="cuda", batch=1, size=8)


def test_invariance_error_sees_a_model_without_symmetry():
    from volrot.benchmark import invariance_error
    from volrot.models import create_model
    from volrot.so3.groups import cube_group

    torch.manual_seed(0)
    model = create_model("resnet3d", num_classes=2, width=2)
    x = torch.randn(1, 1, 8, 8, 8)
    assert invariance_error(model, x, elements=cube_group("O").elements) > 1e-3
    assert invariance_error(model, x) == 0.0  # its declared group is the identity alone


def test_invariance_error_uses_the_declared_group():
    """gcnn D4 is invariant to its 8 rotations, not to the 24 (the figure used to be over 24)."""
    from volrot.benchmark import invariance_error
    from volrot.models import create_model
    from volrot.so3.groups import cube_group

    torch.manual_seed(0)
    model = create_model("gcnn", num_classes=2, group="D4", width=4)
    x = torch.randn(1, 1, 8, 8, 8)
    inside = invariance_error(model, x)
    assert inside <= 1e-4
    assert invariance_error(model, x, elements=cube_group("O").elements) > max(100 * inside, 1e-4)
