import csv
import json

import pytest
from typer.testing import CliRunner

from volrot.cli import app
from volrot.engine.rotated import ROW_FIELDS, SUMMARY_FIELDS

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A 1-epoch resnet3d (width 4) trained on 8 shapes volumes of 16³ by the real trainer."""
    from volrot.config import recipe_from_dict
    from volrot.engine.train import train

    out = tmp_path_factory.mktemp("runs")
    recipe = recipe_from_dict(
        {
            "model": {"arch": "resnet3d", "width": 4},
            "data": {"name": "shapes", "size": 16, "max_samples": 8},
            "train": {"epochs": 1, "batch_size": 8, "seed": 0, "device": "cpu", "out": str(out), "name": "tiny"},
        }
    )
    return train(recipe, progress=False).best_checkpoint


def test_cli_eval_rotated_writes_all_outputs(tiny_checkpoint, tmp_path):
    out = tmp_path / "rot"
    args = ["eval-rotated", str(tiny_checkpoint), "--angles", "90", "--n", "2", "--max-samples", "4"]
    res = runner.invoke(app, args + ["--out", str(out), "--quiet"], terminal_width=100)
    assert res.exit_code == 0, res.output
    for word in ("unrotated", "octahedral", "axes", "so3-grid", "haar", "control", "report:"):
        assert word in res.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    meta = report["meta"]
    assert meta["checkpoint"] == str(tiny_checkpoint) and meta["model"] == "resnet3d"
    assert meta["data"] == "shapes" and meta["split"] == "test" and meta["n_samples"] == 4
    assert meta["input_shape"] == [1, 16, 16, 16] and meta["mask"] == "sphere" and meta["angles_deg"] == 90
    counts = {k: v["count"] for k, v in report["protocols"].items()}
    assert counts == {"octahedral": 24, "axes": 12, "so3-grid": counts["so3-grid"], "haar": 2, "control": 4}
    for summary in report["protocols"].values():
        assert set(summary) == set(SUMMARY_FIELDS) | {"details"}
    assert report["protocols"]["so3-grid"]["details"]["spacing_deg"] <= 90
    assert all(set(r) == set(ROW_FIELDS) for r in report["rows"])
    with open(out / "report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(ROW_FIELDS) and len(rows) == 1 + sum(counts.values())
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # a trained, non-equivariant model is not exactly invariant even on the exact rotations
    assert report["protocols"]["octahedral"]["max_abs_dlogit"] > 1e-4


def test_cli_default_out_and_data_override(tiny_checkpoint):
    args = ["eval-rotated", str(tiny_checkpoint), "-p", "octahedral", "--max-samples", "2", "-q"]
    res = runner.invoke(app, args + ["--data", "shapes", "--split", "val", "--mask", "pad"])
    assert res.exit_code == 0, res.output
    folders = sorted((tiny_checkpoint.parent / "eval-rotated").iterdir())
    assert len(folders) == 1 and f"report: {folders[0]}" in " ".join(res.output.split())
    report = json.loads((folders[0] / "report.json").read_text(encoding="utf-8"))
    assert report["meta"]["split"] == "val" and report["meta"]["input_shape"] == [1, 28, 28, 28]
    assert list(report["protocols"]) == ["octahedral", "control"]
    # a second evaluation gets its own folder; the first report is untouched
    before = (folders[0] / "report.json").read_bytes()
    again = runner.invoke(app, args + ["--protocol", "axes", "--angles", "90"])
    assert again.exit_code == 0, again.output
    folders2 = sorted((tiny_checkpoint.parent / "eval-rotated").iterdir())
    assert len(folders2) == 2 and folders[0] in folders2
    assert (folders[0] / "report.json").read_bytes() == before


def test_cli_refuses_a_used_out_folder_without_force(tiny_checkpoint, tmp_path):
    out = tmp_path / "rot"
    args = ["eval-rotated", str(tiny_checkpoint), "-p", "octahedral", "--max-samples", "2", "-q", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "report.json").read_bytes()
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "not empty; pass --force" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert (out / "report.json").read_bytes() == before
    forced = runner.invoke(app, args + ["--force", "--seed", "3"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.json", "report.png"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--protocol", "spin"], "unknown protocol"),
        (["--mask", "cube"], "--mask"),
        (["--split", "dev"], "--split"),
        (["--angles", "1"], "--angles"),
        (["--data", "nosuchdata"], "unknown dataset"),
        (["--device", "cuda:7"], "--device"),
    ],
)
def test_cli_user_errors_exit_2_without_output(tiny_checkpoint, tmp_path, extra, message):
    out = tmp_path / "never"
    res = runner.invoke(app, ["eval-rotated", str(tiny_checkpoint), "--out", str(out), "-q", *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_cli_missing_checkpoint(tmp_path):
    res = runner.invoke(app, ["eval-rotated", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output


def test_cli_rendered_protocol_and_spline_path(tiny_checkpoint, tmp_path):
    out = tmp_path / "rendered"
    args = ["eval-rotated", str(tiny_checkpoint), "-p", "rendered", "-p", "haar", "--n", "2", "--max-samples", "4"]
    res = runner.invoke(app, args + ["--resample", "spline3", "--out", str(out), "-q"], terminal_width=120)
    assert res.exit_code == 0, res.output
    assert "rendered" in res.output and "resample=spline3" in res.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert list(report["protocols"]) == ["haar", "rendered", "control"]
    assert report["protocols"]["control"]["count"] == 5 and report["meta"]["resample"] == "spline3"
    control = [r for r in report["rows"] if r["protocol"] == "control"]
    assert control[0]["label"] == "identity (spline3)" and control[-1]["label"] == "identity (rendered)"
    assert control[-1]["max_abs_dlogit"] < 1e-5


def test_cli_rendered_protocol_on_data_that_cannot_be_rendered(tiny_checkpoint, tmp_path):
    args = ["eval-rotated", str(tiny_checkpoint), "-p", "rendered", "--data", "adrenal", "--root", str(tmp_path)]
    res = runner.invoke(app, args + ["--out", str(tmp_path / "never"), "-q"])
    assert res.exit_code == 2
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "protocol 'rendered' needs data 'shapes'" in lines[0], res.output
    assert not (tmp_path / "never").exists()
    res = runner.invoke(app, ["eval-rotated", str(tiny_checkpoint), "--resample", "cubic", "-q"])
    assert res.exit_code == 2 and "unknown resampling 'cubic'" in res.output
