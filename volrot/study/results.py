"""From finished run folders to the study table: per cell numbers, then per model mean ± std.

A cell's numbers come from its own files only: `metrics.json` (arch, parameters, training time,
best epoch, full test-set ACC/AUC) and the rotated evaluation's `report.json` (unrotated and
per-protocol ACC/AUC, consistency, logit changes). Per model, each number is the mean and the
sample standard deviation (n − 1) across seeds of the per-seed values, where a per-seed value
over rotations is that report's own mean (`acc_mean`...), so the table restates the cells'
reports and nothing else.

`collect_study` reads the finished cells of a study folder; `collect_paths` (`volrot compare`)
reads run folders, `report.json` files and study folders, and groups runs that differ only in
their seed into one model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from volrot.engine.rotated import CONTROL, PROTOCOLS, RotatedReport
from volrot.errors import UserError

#: protocols in table order: the built-in ones, then any other (new) protocol, the control last
_PREFERRED = ("haar", "so3-grid", "axes")


@dataclass
class CellResult:
    model: str
    seed: int | None
    report: RotatedReport
    report_path: Path
    run_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json (empty when absent)
    recipe: dict[str, Any] | None = None  # recipe.yaml

    @property
    def arch(self) -> str | None:
        return self.metrics.get("arch") or (self.recipe or {}).get("model", {}).get("arch") or self.report.meta.get("model")

    @property
    def num_classes(self) -> int:
        return int(self.report.meta.get("num_classes") or 2)

    def values(self) -> dict[str, float | None]:
        """This cell's numbers (the keys of the study table), taken from its files."""
        rep, m = self.report, self.metrics
        v: dict[str, Any] = {
            "parameters": m.get("parameters"),
            "train_seconds": m.get("train_seconds"),
            "eval_seconds": rep.meta.get("elapsed_s"),
            "best_epoch": m.get("best_epoch"),
            "test_acc": (m.get("test") or {}).get("acc"),
            "test_auc": (m.get("test") or {}).get("auc"),
            "unrotated_acc": rep.reference.get("acc"),
            "unrotated_auc": rep.reference.get("auc"),
        }
        for name, s in rep.protocols.items():
            v[f"{name}_acc"] = s.get("acc_mean")
            v[f"{name}_auc"] = s.get("auc_mean")
            v[f"{name}_acc_worst"] = s.get("acc_worst")
            v[f"{name}_consistency"] = s.get("consistency_mean")
            v[f"{name}_rel_dlogit"] = s.get("rel_dlogit")
        worst = self.worst_rotation()
        v["worst_acc"] = worst["acc"] if worst else None
        v["invariance_error_24"] = (rep.protocols.get("octahedral") or {}).get("rel_dlogit")
        agree = headline_protocol(rep.protocols)
        v["consistency"] = (rep.protocols.get(agree) or {}).get("consistency_mean") if agree else None
        return {k: _num(x) for k, x in v.items()}

    def worst_rotation(self) -> dict[str, Any] | None:
        """The rotation (over every protocol but the control) with the lowest ACC."""
        rows = [r for r in self.report.rows if r["protocol"] != CONTROL and _num(r["acc"]) is not None]
        if not rows:
            return None
        r = min(rows, key=lambda r: r["acc"])
        return {"acc": float(r["acc"]), "protocol": r["protocol"], "label": r["label"], "angle_deg": r["angle_deg"]}

    def eval_settings(self) -> dict[str, Any]:
        meta = self.report.meta
        keys = ("data", "split", "protocols", "angles_deg", "n", "seed", "mask", "n_samples")
        out = {k: meta.get(k) for k in keys}
        out["subset"] = (meta.get("subset") or {}).get("indices")
        return out


@dataclass
class ModelResult:
    model: str
    cells: list[CellResult]

    @property
    def arch(self) -> str | None:
        return self.cells[0].arch

    @property
    def seeds(self) -> list[int | None]:
        return [c.seed for c in self.cells]

    def stat(self, key: str) -> dict[str, Any]:
        """mean, std (n − 1; 0 for one seed), min, max, n and the per-seed values of `key`."""
        vals = [c.values().get(key) for c in self.cells]
        good = [x for x in vals if x is not None]
        if not good:
            return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": vals}
        arr = np.asarray(good, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        return {"mean": float(arr.mean()), "std": std, "min": float(arr.min()), "max": float(arr.max()),
                "n": len(arr), "values": vals}  # fmt: skip


@dataclass
class StudyResults:
    title: str
    models: list[ModelResult]
    protocols: list[str]  # rotated protocols in table order, the control last (when present)
    expected_cells: int | None = None  # a study's cell count (None for `compare`)
    info: dict[str, Any] = field(default_factory=dict)  # data / eval / seeds of a study
    notes: list[str] = field(default_factory=list)

    @property
    def cells(self) -> list[CellResult]:
        return [c for m in self.models for c in m.cells]

    @property
    def num_classes(self) -> int:
        return max((c.num_classes for c in self.cells), default=2)

    @property
    def headline(self) -> str | None:
        """The protocol whose prediction consistency the table shows."""
        return headline_protocol(self.protocols)


def headline_protocol(protocols: Iterable[str]) -> str | None:
    names = [p for p in protocols if p != CONTROL]
    for p in _PREFERRED:
        if p in names:
            return p
    return names[0] if names else None


def protocol_order(reports: Iterable[RotatedReport]) -> list[str]:
    seen: list[str] = []
    for rep in reports:
        for name in rep.protocols:
            if name not in seen:
                seen.append(name)
    known = [p for p in PROTOCOLS if p in seen]
    other = [p for p in seen if p not in PROTOCOLS and p != CONTROL]
    return known + other + ([CONTROL] if CONTROL in seen else [])


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------- reading folders


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable JSON file ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return data


def load_rotated_report(path: Path) -> RotatedReport:
    data = read_json(path)
    if not all(k in data for k in ("meta", "reference", "protocols", "rows")):
        raise UserError(f"{path}: not an eval-rotated report.json (needs meta, reference, protocols, rows)")
    try:
        return RotatedReport.from_dict(data)
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: malformed eval-rotated report") from None


def _read_recipe(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None or not (run_dir / "recipe.yaml").is_file():
        return None
    try:
        found = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return found if isinstance(found, dict) else None


def rotated_report_of(run_dir: Path) -> Path | None:
    """The run's rotated evaluation: `eval-rotated/report.json` (a study cell, or `--out`), else
    the newest `eval-rotated/<date>-<time>/report.json` that `volrot eval-rotated` writes."""
    direct = run_dir / "eval-rotated" / "report.json"
    if direct.is_file():
        return direct
    stamped = sorted((p for p in (run_dir / "eval-rotated").glob("*/report.json") if p.is_file()), key=lambda p: p.parent.name)
    return stamped[-1] if stamped else None


def cell_from_run(run_dir: Path, *, model: str | None = None, seed: int | None = None) -> CellResult:
    """A finished run folder with its rotated evaluation (`rotated_report_of`)."""
    report_path = rotated_report_of(run_dir)
    if report_path is None:
        raise UserError(f"{run_dir}: no eval-rotated report (run `volrot eval-rotated {run_dir}/best.safetensors`)")
    return _cell(report_path, run_dir, model, seed)


def cell_from_report(report_path: Path) -> CellResult:
    """A report.json; its run folder (for parameters and training time) when it sits in one."""
    # <run>/eval-rotated/report.json or <run>/eval-rotated/<date>-<time>/report.json
    run_dir = next((d for d in report_path.parents[1:3] if (d / "metrics.json").is_file()), report_path.parent.parent)
    if not (run_dir / "metrics.json").is_file():
        ckpt = load_rotated_report(report_path).meta.get("checkpoint")
        run_dir = Path(ckpt).parent if ckpt and (Path(ckpt).parent / "metrics.json").is_file() else None
    return _cell(report_path, run_dir, None, None)


def _cell(report_path: Path, run_dir: Path | None, model: str | None, seed: int | None) -> CellResult:
    report = load_rotated_report(report_path)
    metrics = read_json(run_dir / "metrics.json") if run_dir and (run_dir / "metrics.json").is_file() else {}
    recipe = _read_recipe(run_dir)
    if seed is None:
        seed = (recipe or {}).get("train", {}).get("seed")
    if model is None:
        name = run_dir.name if run_dir is not None else report_path.parent.name
        model = re.sub(r"-seed\d+$", "", name)
    return CellResult(model, seed, report, report_path, run_dir, metrics, recipe)


def collect_study(spec, study_dir: Path, cells) -> StudyResults:
    """The finished cells (trained, evaluated with the study's current options) of a study."""
    from volrot.study.cells import eval_is_current

    by_model: dict[str, list[CellResult]] = {}
    missing = []
    for cell in cells:
        if (cell.run_dir / "metrics.json").is_file() and eval_is_current(cell):
            by_model.setdefault(cell.model, []).append(cell_from_run(cell.run_dir, model=cell.model, seed=cell.seed))
        else:
            missing.append(cell.name)
    models = [ModelResult(m.name, by_model[m.name]) for m in spec.models if m.name in by_model]
    notes = []
    if missing:
        notes.append(f"{len(missing)} of {len(cells)} cells not finished: {', '.join(missing)}")
    res = StudyResults(
        title=f"study {spec.name}",
        models=models,
        protocols=protocol_order(c.report for m in models for c in m.cells),
        expected_cells=len(cells),
        info={"description": spec.description, "data": spec.data, "eval": spec.eval, "seeds": spec.seeds,
              "study_dir": str(study_dir)},  # fmt: skip
        notes=notes,
    )
    res.notes += settings_notes(res)
    return res


def collect_paths(paths: Iterable[str | Path]) -> StudyResults:
    """`volrot compare`: run folders, report.json files and study folders -> one table."""
    from volrot.study.cells import plan_cells
    from volrot.study.spec import STUDY_FILE, study_from_folder

    cells: list[CellResult] = []
    notes: list[str] = []
    given = [Path(p) for p in paths]
    if not given:
        raise UserError("compare: give at least one run folder, report.json or study folder")
    for p in given:
        if p.is_file() and p.name in (STUDY_FILE, "study.json", "study.md", "study.html"):
            p = p.parent
        if p.is_dir() and (p / STUDY_FILE).is_file():
            spec = study_from_folder(p)
            part = collect_study(spec, p, plan_cells(spec, p))
            cells += part.cells
            notes += [f"{p}: {n}" for n in part.notes if "not finished" in n]
        elif p.is_dir() and rotated_report_of(p) is not None:
            cells.append(cell_from_run(p))
        elif p.is_file() and p.suffix == ".json":
            cells.append(cell_from_report(p))
        elif p.exists():
            notes.append(f"skipped {p}: not a run folder with eval-rotated/report.json, a report.json or a study folder")
        else:
            raise UserError(f"compare: {p} does not exist")
    if not cells:
        raise UserError("compare: none of the paths holds a rotated evaluation (run `volrot eval-rotated` first)")
    models = group_cells(cells)
    res = StudyResults(
        title="compare", models=models, protocols=protocol_order(c.report for c in cells), notes=notes
    )
    res.notes += settings_notes(res)
    return res


def group_cells(cells: list[CellResult]) -> list[ModelResult]:
    """Cells with the same model label and the same recipe apart from seed/name/out/device form
    one model; a label used by different recipes gets a suffix (#2, #3...)."""
    groups: list[tuple[str, Any, list[CellResult]]] = []
    for c in cells:
        key = _recipe_key(c.recipe)
        for label, k, members in groups:
            if label == c.model and k == key and key is not None and all(m.seed != c.seed for m in members):
                members.append(c)
                break
        else:
            groups.append((c.model, key, [c]))
    out, used = [], {}
    for label, _, members in groups:
        used[label] = used.get(label, 0) + 1
        name = label if used[label] == 1 else f"{label}#{used[label]}"
        for m in members:
            m.model = name
        out.append(ModelResult(name, members))
    return out


def _recipe_key(recipe: dict[str, Any] | None) -> str | None:
    if recipe is None:
        return None
    r = json.loads(json.dumps(recipe, default=str))
    for key in ("seed", "name", "out", "device", "num_workers"):
        (r.get("train") or {}).pop(key, None)
    return json.dumps(r, sort_keys=True)


def settings_notes(res: StudyResults) -> list[str]:
    """A note when the cells were not all evaluated the same way (data, rotations, volumes)."""
    settings = {json.dumps(c.eval_settings(), sort_keys=True, default=str) for c in res.cells}
    if len(settings) <= 1:
        return []
    keys = ("data", "split", "protocols", "angles_deg", "n", "seed", "mask", "n_samples", "subset")
    differ = [k for k in keys if len({json.dumps(c.eval_settings().get(k), default=str) for c in res.cells}) > 1]
    return [f"the cells were not evaluated alike (differ in: {', '.join(differ)}); compare their numbers with care"]
