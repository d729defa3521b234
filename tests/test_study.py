"""`volrot study` and `volrot compare` on a tiny study (2 models x 2 seeds, 16³ shapes, CPU)."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from volrot.artifacts.checkpoint import read_tensors
from volrot.cli import app
from volrot.engine.train import train
from volrot.errors import UserError
from volrot.study import collect_paths, load_study, run_study, shipped_studies
from volrot.study.cells import parse_shard, plan_cells, shard_cells
from volrot.study.spec import study_from_dict

runner = CliRunner()

TINY = {
    "name": "tiny",
    "data": {"name": "shapes", "size": 16, "max_samples": 16},
    "eval": {"protocols": ["octahedral", "haar"], "n": 2, "max_samples": 8, "batch_size": 16},
    "seeds": [0, 1],
    "optim": {"lr": 0.003},
    "train": {"epochs": 2, "batch_size": 8, "device": "cpu"},
    "models": [
        {"name": "plain", "model": {"arch": "resnet3d", "width": 2}},
        {"name": "so3aug", "model": {"arch": "resnet3d", "width": 2}, "train": {"augment": "so3"}},
    ],
}


def tiny_spec(**changes):
    raw = json.loads(json.dumps(TINY))
    raw.update(changes)
    return study_from_dict(raw, source="tiny.yaml")


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    """The whole tiny study, run once for the module."""
    out = tmp_path_factory.mktemp("study") / "tiny"
    run = run_study(tiny_spec(), out, progress=False)
    return out, run


def _report(cell_dir: Path) -> dict:
    return json.loads((cell_dir / "eval-rotated" / "report.json").read_text(encoding="utf-8"))


def test_tiny_study_cells_are_run_folders_and_report_is_written(full_study):
    out, run = full_study
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["plain-seed0", "plain-seed1", "so3aug-seed0", "so3aug-seed1"]
    assert set(run.actions.values()) == {"trained, evaluated"}
    for name in names:
        cell = out / name
        for f in ("recipe.yaml", "best.safetensors", "train_state.safetensors", "metrics.json"):
            assert (cell / f).is_file(), (name, f)
        m = json.loads((cell / "metrics.json").read_text(encoding="utf-8"))
        assert m["run_name"] == name and m["arch"] == "resnet3d" and m["best_epoch"] in (1, 2)
        assert m["parameters"] > 0 and m["train_seconds"] > 0 and m["epochs"] == 2
        recipe = yaml.safe_load((cell / "recipe.yaml").read_text(encoding="utf-8"))
        assert recipe["train"]["seed"] == int(name[-1]) and recipe["data"]["size"] == 16
        assert recipe["train"]["augment"] == ("so3" if name.startswith("so3aug") else "none")
        rep = _report(cell)
        assert rep["meta"]["n_samples"] == 8 and rep["meta"]["subset"]["strategy"] == "stratified by class"
        assert set(rep["protocols"]) == {"octahedral", "haar", "control"}
    for f in ("study.md", "study.csv", "study.json", "study-angle.png", "study-rotated.png", "study.html", "study.yaml"):
        assert (out / f).is_file(), f
    page = (out / "study.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and "http://" not in page and "https://" not in page
    assert "plain" in page and "so3aug" in page
    md = (out / "study.md").read_text(encoding="utf-8")
    assert "| plain | resnet3d | 2 |" in md and "study-angle.png" in md


def test_table_numbers_equal_each_cells_own_report(full_study):
    out, _ = full_study
    table = json.loads((out / "study.json").read_text(encoding="utf-8"))
    rows = {r["model"]: r for r in csv.DictReader((out / "study.csv").read_text(encoding="utf-8").splitlines())}
    assert [m["model"] for m in table["models"]] == ["plain", "so3aug"]
    for model in table["models"]:
        name = model["model"]
        reps = [_report(out / f"{name}-seed{s}") for s in (0, 1)]
        mets = [json.loads((out / f"{name}-seed{s}" / "metrics.json").read_text(encoding="utf-8")) for s in (0, 1)]
        expect = {
            "unrotated_acc": [r["reference"]["acc"] for r in reps],
            "unrotated_auc": [r["reference"]["auc"] for r in reps],
            "octahedral_acc": [r["protocols"]["octahedral"]["acc_mean"] for r in reps],
            "octahedral_auc": [r["protocols"]["octahedral"]["auc_mean"] for r in reps],
            "haar_acc": [r["protocols"]["haar"]["acc_mean"] for r in reps],
            "haar_auc": [r["protocols"]["haar"]["auc_mean"] for r in reps],
            "control_acc": [r["protocols"]["control"]["acc_mean"] for r in reps],
            "consistency": [r["protocols"]["haar"]["consistency_mean"] for r in reps],
            "worst_acc": [min(x["acc"] for x in r["rows"] if x["protocol"] != "control") for r in reps],
            "invariance_error_24": [r["protocols"]["octahedral"]["rel_dlogit"] for r in reps],
            "train_seconds": [m["train_seconds"] for m in mets],
            "parameters": [m["parameters"] for m in mets],
        }
        for key, values in expect.items():
            stat = model[key]
            assert stat["values"] == pytest.approx(values, abs=1e-12), (name, key)
            assert stat["mean"] == pytest.approx(np.mean(values), abs=1e-12), (name, key)
            assert stat["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12), (name, key)
            if key in ("haar_acc", "unrotated_auc", "train_seconds"):
                assert float(rows[name][f"{key}_mean"]) == pytest.approx(np.mean(values), rel=1e-5)
        assert model["invariance_error_24"]["max"] == pytest.approx(max(expect["invariance_error_24"]))


def test_shards_union_equals_full_run(full_study, tmp_path):
    spec = tiny_spec()
    cells = plan_cells(spec, tmp_path)
    for n in (1, 2, 3, 5):
        parts = [shard_cells(cells, (i, n)) for i in range(n)]
        names = [c.name for part in parts for c in part]
        assert sorted(names) == sorted(c.name for c in cells) and len(names) == len(set(names))
    assert [c.name for c in shard_cells(cells, (1, 2))] == ["plain-seed1", "so3aug-seed1"]  # deterministic
    full, _ = full_study
    out = tmp_path / "sharded"
    for i in range(2):  # two shards, one after the other (as two SLURM array tasks would)
        res = runner.invoke(app, ["study", _write(tmp_path, TINY), "--out", str(out), "--shard", f"{i}/2", "-q"])
        assert res.exit_code == 0, res.output
    assert "4 of 4 cells finished" in res.output
    for cell in cells:
        a, b = _report(full / cell.name), _report(out / cell.name)
        assert a["reference"] == b["reference"] and a["protocols"] == b["protocols"], cell.name
        wa, _ = read_tensors(full / cell.name / "best.safetensors")
        wb, _ = read_tensors(out / cell.name / "best.safetensors")
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    ta = json.loads((full / "study.json").read_text(encoding="utf-8"))
    tb = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert [m["haar_acc"]["values"] for m in ta["models"]] == [m["haar_acc"]["values"] for m in tb["models"]]


def test_finished_cells_are_skipped_and_an_interrupted_one_resumes(full_study, tmp_path):
    full, _ = full_study
    out = tmp_path / "again"
    shutil.copytree(full, out)
    spec = tiny_spec()
    cells = {c.name: c for c in plan_cells(spec, out)}
    # so3aug-seed1: interrupted after its first epoch; plain-seed1: trained, evaluation lost
    shutil.rmtree(out / "so3aug-seed1")
    part = train(cells["so3aug-seed1"].recipe, progress=False, stop_after_epoch=1)
    assert not part.completed
    shutil.rmtree(out / "plain-seed1" / "eval-rotated")
    before = {p: p.stat().st_mtime_ns for p in (out / "plain-seed0").rglob("*") if p.is_file()}
    run = run_study(spec, out, progress=False)
    assert run.actions == {
        "plain-seed0": "skipped (finished)",
        "plain-seed1": "evaluated",
        "so3aug-seed0": "skipped (finished)",
        "so3aug-seed1": "resumed training, evaluated",
    }
    assert {p: p.stat().st_mtime_ns for p in (out / "plain-seed0").rglob("*") if p.is_file()} == before
    wa, _ = read_tensors(full / "so3aug-seed1" / "best.safetensors")
    wb, _ = read_tensors(out / "so3aug-seed1" / "best.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)  # resumed == uninterrupted
    assert _report(out / "so3aug-seed1")["protocols"] == _report(full / "so3aug-seed1")["protocols"]
    assert _report(out / "plain-seed1")["protocols"] == _report(full / "plain-seed1")["protocols"]
    # a third call has nothing left to do
    assert set(run_study(spec, out, progress=False).actions.values()) == {"skipped (finished)"}


def test_report_only_on_a_partial_study(full_study, tmp_path):
    full, _ = full_study
    out = tmp_path / "partial"
    out.mkdir()
    for name in ("study.yaml", "plain-seed0", "so3aug-seed1"):
        src = full / name
        shutil.copytree(src, out / name) if src.is_dir() else shutil.copy(src, out / name)
    res = runner.invoke(app, ["study", _write(tmp_path, TINY), "--out", str(out), "--report-only"])
    assert res.exit_code == 0, res.output
    assert "2 of 4 cells" in res.output and "not finished: plain-seed1, so3aug-seed0" in res.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["plain-seed0", "so3aug-seed1"]  # nothing trained
    table = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert table["finished_cells"] == 2 and table["expected_cells"] == 4
    assert [(m["model"], m["seeds"]) for m in table["models"]] == [("plain", [0]), ("so3aug", [1])]
    assert table["models"][0]["haar_acc"]["mean"] == _report(full / "plain-seed0")["protocols"]["haar"]["acc_mean"]


def test_compare_two_run_folders(full_study, tmp_path):
    full, _ = full_study
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", str(full / "plain-seed0"), str(full / "so3aug-seed1"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "study.json").read_text(encoding="utf-8"))
    assert [(m["model"], m["seeds"]) for m in table["models"]] == [("plain", [0]), ("so3aug", [1])]
    assert table["models"][1]["octahedral_auc"]["mean"] == _report(full / "so3aug-seed1")["protocols"]["octahedral"]["auc_mean"]
    for f in ("study.md", "study.csv", "study-angle.png", "study-rotated.png", "study.html"):
        assert (out / f).is_file()
    # run folders differing only in their seed are one model; a report.json or the study folder work too
    cells = collect_paths([full / "plain-seed0", full / "plain-seed1" / "eval-rotated" / "report.json"])
    assert [(m.model, m.seeds) for m in cells.models] == [("plain", [0, 1])]
    whole = collect_paths([full])
    assert [(m.model, m.seeds) for m in whole.models] == [("plain", [0, 1]), ("so3aug", [0, 1])]


def _write(tmp_path: Path, raw: dict, name: str = "tiny.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(p)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"evaluation": {}}, "unknown study key 'evaluation'"),
        ({"eval": {"protocols": ["haar"], "samples": 8}}, "unknown study key 'eval.samples'"),
        ({"eval": {"protocols": ["spin"]}}, "unknown protocol 'spin'"),
        ({"train": {"epochs": 1, "seed": 3}}, "'train.seed' is set by the study"),
        ({"seeds": [0, 0]}, "repeated seed"),
        ({"models": [{"name": "a", "model": {"arch": "resnet3d"}, "loss": 1}]}, "unknown key 'loss'"),
        ({"models": [{"name": "a", "model": {"arch": "resnet3d"}, "train": {"epoch": 1}}]}, "unknown recipe key 'train.epoch'"),
        ({"models": [{"name": "a", "model": {"arch": "resnet3d", "widht": 4}}]}, "unknown recipe key 'model.widht'"),
        ({"models": [{"name": "a", "model": {"arch": "resnet3d"}, "train": {"augment": "so2"}}]}, "unknown augmentation 'so2'"),
        ({"models": [{"name": "a", "model": {"arch": "resnet3d"}, "data": {"size": 20}}]}, "unknown key 'data'"),
        ({"models": [{"name": "a/b", "model": {"arch": "resnet3d"}}]}, "needs a 'name'"),
    ],
)
def test_bad_study_is_one_line_exit_2_and_nothing_runs(tmp_path, change, message):
    raw = {**TINY, **change}
    out = tmp_path / "never"
    res = runner.invoke(app, ["study", _write(tmp_path, raw), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_changed_recipe_of_a_trained_cell_stops_before_anything_runs(full_study, tmp_path):
    full, _ = full_study
    out = tmp_path / "changed"
    shutil.copytree(full, out)
    shutil.rmtree(out / "plain-seed1")
    raw = json.loads(json.dumps(TINY))
    raw["models"][1]["model"]["width"] = 3
    with pytest.raises(UserError, match=r"so3aug-seed0: this cell was trained with another recipe \(model.width"):
        run_study(study_from_dict(raw), out, progress=False)
    assert not (out / "plain-seed1").exists()  # nothing ran, not even the cells before it


def test_shard_syntax():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_shipped_studies_load_by_name():
    names = shipped_studies()
    assert "shapes-quick" in names and len([n for n in names if n.endswith("-paper")]) == 6
    for name in names:
        spec = load_study(name)
        assert spec.name == name and spec.models
        archs = {spec_cell.recipe.model.arch for spec_cell in plan_cells(spec, Path("x"))}
        assert {"resnet3d", "gcnn", "gmr", "steerable", "equilopo"} <= archs, name
    quick = load_study("shapes-quick")
    assert len(quick.seeds) == 2 and {"octahedral", "haar"} <= set(quick.eval["protocols"])
    pairs = {(c.recipe.model.arch, c.recipe.train.augment) for c in plan_cells(quick, Path("x"))}
    assert {("resnet3d", "none"), ("resnet3d", "so3")} <= pairs


def test_set_overrides_and_study_folder_argument(full_study, tmp_path):
    path = _write(tmp_path, TINY)
    spec = load_study(path, ["eval.n=3", "data.root=/somewhere", "train.device=cpu"])
    assert spec.eval["n"] == 3 and spec.data["root"] == "/somewhere"
    with pytest.raises(UserError, match="--set: study key must look like"):
        load_study(path, ["models.width=3"])
    with pytest.raises(UserError, match="unknown recipe key 'train.epoch'"):
        load_study(path, ["train.epoch=3"])
    full, _ = full_study
    assert load_study(full).to_dict() == tiny_spec().to_dict()  # a study folder holds its study.yaml


def test_changed_eval_options_make_a_cell_stale_but_spelled_out_defaults_do_not(full_study):
    from volrot.study.cells import eval_is_current

    full, _ = full_study
    current = plan_cells(tiny_spec(), full)[0]
    assert eval_is_current(current)
    same = plan_cells(tiny_spec(eval={**TINY["eval"], "mask": "sphere", "angles": 30.0}), full)[0]
    assert eval_is_current(same)  # the defaults, written out
    other = plan_cells(tiny_spec(eval={**TINY["eval"], "n": 3}), full)[0]
    assert not eval_is_current(other)


def test_changed_eval_options_re_evaluate_in_place(full_study, tmp_path):
    full, _ = full_study
    out = tmp_path / "re-eval"
    shutil.copytree(full, out)
    spec = tiny_spec(eval={**TINY["eval"], "n": 3})
    run = run_study(spec, out, progress=False)
    assert set(run.actions.values()) == {"evaluated"}  # no retraining; the old report is replaced
    assert all(_report(out / name)["protocols"]["haar"]["count"] == 3 for name in run.actions)
def test_a_recipe_key_added_to_volrot_later_counts_at_its_default():
    from volrot.study.spec import recipe_difference

    old_folder = {"model": {"arch": "equilopo", "blocks": 1}, "data": {"name": "shapes"}, "train": {"epochs": 2}}
    study = {
        "model": {"arch": "equilopo", "blocks": 1, "head": "softmax"},
        "data": {"name": "shapes", "allow_duplicates": False},
        "train": {"epochs": 2, "threads": 1},
    }
    assert recipe_difference(study, old_folder) is None
    changed = {**study, "model": {**study["model"], "head": "gram"}}
    assert "model.head" in recipe_difference(changed, old_folder)
    assert "data.allow_duplicates" in recipe_difference({**study, "data": {"name": "shapes", "allow_duplicates": True}}, old_folder)
