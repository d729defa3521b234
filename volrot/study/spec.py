"""Study files: which models to train on which data, how often, and how to evaluate them.

A study file is YAML with these keys (anything else is a `UserError` naming the key)::

    name: shapes-quick            # optional; default: the file name without .yaml
    description: ...              # optional, free text (shown in the report)
    data:  {name: shapes, size: 16, max_samples: 512}   # a recipe's data section, for every model
    eval:  {protocols: [octahedral, haar], n: 32, max_samples: 48, mask: sphere}
    seeds: [0, 1, 2]              # every model is trained once per seed (train.seed)
    optim: {lr: 0.003}            # optional: optim/train keys for every model
    train: {epochs: 4, batch_size: 16, device: auto}
    models:                       # named recipe fragments
      - name: resnet3d
        model: {arch: resnet3d, width: 4}
      - name: resnet3d-so3
        model: {arch: resnet3d, width: 4}
        train: {augment: so3}
      - name: equilopo
        recipe: equilopo_shapes   # optional base: a shipped recipe's name or a recipe file
        optim: {lr: 0.001}

The recipe of the cell (model, seed) is, lowest first: the built-in defaults < the study's
`optim`/`train` (defaults for every model) < the entry's `recipe` file (its `data` section is
ignored; the study's `train.device`, when given, is kept) < the entry's own `model`/`optim`/
`train` < the study's `data`, `train.seed = seed`, `train.out = <study folder>` and
`train.name = <model>-seed<seed>`. No (arch, dataset) recipe is looked up implicitly: a cell's
recipe is what the study file says, and its run folder's `recipe.yaml` shows all of it. Seed, out and name belong to the study: setting them in
a model entry or in the study's `train` is an error.

`eval` holds keyword arguments of `volrot.engine.eval_rotated.evaluate_checkpoint` (the library
function behind `volrot eval-rotated`): `protocols`, `angles`, `n`, `seed`, `mask`,
`max_samples` (how many test volumes, stratified by class), `split`, `batch_size`, `device`
(default: the cell's `train.device`), and whatever options that function grows later. The
checkpoint, the data and the output folder are the study's.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from volrot.errors import UserError

SHIPPED_STUDIES = Path(__file__).resolve().parent.parent / "studies"
STUDY_FILE = "study.yaml"  # the effective study, in every study folder
STUDY_KEYS = ("name", "description", "data", "eval", "seeds", "optim", "train", "models")
ENTRY_KEYS = ("name", "description", "recipe", "model", "optim", "train")
STUDY_OWNED_TRAIN_KEYS = ("seed", "out", "name")
#: evaluate_checkpoint parameters the study sets itself (not allowed in `eval`)
_EVAL_OWNED = ("checkpoint", "data", "root", "out", "progress", "force")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class ModelSpec:
    """One named entry of `models:`; `fragment` is its raw recipe dict (model/optim/train)."""

    name: str
    fragment: dict[str, Any]
    recipe: str | None = None  # base recipe file (resolved path) or shipped name
    description: str = ""


@dataclass
class StudySpec:
    name: str
    data: dict[str, Any]
    eval: dict[str, Any]
    seeds: list[int]
    models: list[ModelSpec]
    optim: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = "study"

    def to_dict(self) -> dict[str, Any]:
        """The study as a plain mapping (what `study.yaml` in the study folder holds)."""
        models = []
        for m in self.models:
            entry: dict[str, Any] = {"name": m.name}
            if m.description:
                entry["description"] = m.description
            if m.recipe:
                entry["recipe"] = m.recipe
            entry.update(m.fragment)
            models.append(entry)
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update(data=self.data, eval=self.eval, seeds=self.seeds)
        if self.optim:
            out["optim"] = self.optim
        if self.train:
            out["train"] = self.train
        out["models"] = models
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise UserError(f"{self.source}: no model named '{name}' (models: {', '.join(m.name for m in self.models)})")


def shipped_studies() -> list[str]:
    """Names of the studies shipped inside the package (`volrot/studies/<name>.yaml`)."""
    return sorted(p.stem for p in SHIPPED_STUDIES.glob("*.yaml"))


def resolve_study_path(path: str | Path) -> Path:
    """A study file, a study folder (its `study.yaml`), or the name of a shipped study
    (`shapes-quick`, `shapes-quick.yaml`)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir() and (p / STUDY_FILE).is_file():
        return p / STUDY_FILE
    shipped = SHIPPED_STUDIES / (p.name if p.suffix == ".yaml" else f"{p.name}.yaml")
    if p.parent in (Path("."), Path("studies")) and shipped.is_file():
        return shipped
    raise UserError(f"study file not found: {p} (shipped studies: {', '.join(shipped_studies()) or 'none'})")


def load_study(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> StudySpec:
    """Read and fully validate a study file (or shipped study name); nothing is run or written.

    `sets`: `section.key=value` overrides of the study's data/eval/optim/train sections (as
    `volrot train --set`), e.g. `data.root=/data/medmnist` or `train.device=cuda`.
    """
    from volrot.config import apply_override, read_yaml

    p = resolve_study_path(path)
    raw = read_yaml(p)
    if isinstance(raw, dict):
        for assignment in sets:
            section = assignment.partition("=")[0].strip().split(".")[0]
            if section not in ("data", "eval", "optim", "train"):
                raise UserError(f"--set: study key must look like data.KEY, eval.KEY, optim.KEY or train.KEY, got '{assignment}'")
            apply_override(raw, assignment)
    return study_from_dict(raw, source=str(p), default_name=p.stem, base_dir=p.parent)


def study_from_dict(
    raw: Any, *, source: str = "study", default_name: str = "study", base_dir: Path | None = None
) -> StudySpec:
    """Validate a raw study mapping; every cell's recipe is built and checked here."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a study must be a YAML mapping")
    for key in raw:
        if key not in STUDY_KEYS:
            raise UserError(f"{source}: unknown study key '{key}' (known: {', '.join(STUDY_KEYS)})")
    for key in ("data", "models", "seeds"):
        if key not in raw:
            raise UserError(f"{source}: the study needs a '{key}' key")
    name = str(raw.get("name") or default_name)
    if not _NAME.match(name):
        raise UserError(f"{source}: study name '{name}' may only use letters, digits and . _ + -")
    data = _mapping(raw["data"], f"{source}: 'data'")
    optim = _mapping(raw.get("optim") or {}, f"{source}: 'optim'")
    train = _mapping(raw.get("train") or {}, f"{source}: 'train'")
    for key in STUDY_OWNED_TRAIN_KEYS:
        if key in train:
            raise UserError(f"{source}: 'train.{key}' is set by the study for every cell ({_OWNED_WHY[key]})")
    seeds = _seeds(raw["seeds"], source)
    models = _models(raw["models"], source, base_dir)
    spec = StudySpec(
        name=name,
        data=data,
        eval=_mapping(raw.get("eval") or {}, f"{source}: 'eval'"),
        seeds=seeds,
        models=models,
        optim=optim,
        train=train,
        description=str(raw.get("description") or ""),
        source=source,
    )
    check_eval_options(spec.eval, source)
    for m in spec.models:  # every cell's recipe must be valid before anything runs
        cell_recipe(spec, m, seeds[0], Path("."))
    return spec


_OWNED_WHY = {"seed": "from 'seeds'", "out": "the study folder", "name": "<model>-seed<seed>"}


def study_from_folder(study_dir: str | Path) -> StudySpec:
    """The study recorded in a study folder (`study.yaml`)."""
    f = Path(study_dir) / STUDY_FILE
    if not f.is_file():
        raise UserError(f"{study_dir}: not a study folder (no {STUDY_FILE})")
    return load_study(f)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a mapping")
    return dict(value)


def _seeds(value: Any, source: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UserError(f"{source}: 'seeds' must be a non-empty list of integers, e.g. [0, 1, 2]")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise UserError(f"{source}: 'seeds' must be non-negative integers, got {value!r}")
    if len(set(value)) != len(value):
        raise UserError(f"{source}: 'seeds' has a repeated seed: {value!r}")
    return list(value)


def _models(value: Any, source: str, base_dir: Path | None) -> list[ModelSpec]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{source}: 'models' must be a non-empty list of named entries")
    out: list[ModelSpec] = []
    for i, entry in enumerate(value):
        where = f"{source}: models[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be a mapping with a 'name'")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise UserError(f"{where} needs a 'name' of letters, digits and . _ + - (it names the run folders)")
        where = f"{source}: model '{name}'"
        for key in entry:
            if key == "data":
                raise UserError(f"{where}: unknown key 'data' (the data section belongs to the study, for every model)")
            if key not in ENTRY_KEYS:
                raise UserError(f"{where}: unknown key '{key}' (known: {', '.join(ENTRY_KEYS)})")
        if any(m.name == name for m in out):
            raise UserError(f"{source}: two models are named '{name}'")
        fragment = {}
        for section in ("model", "optim", "train"):
            if section in entry:
                fragment[section] = _mapping(entry[section], f"{where}: '{section}'")
        for key in STUDY_OWNED_TRAIN_KEYS:
            if key in fragment.get("train", {}):
                raise UserError(f"{where}: 'train.{key}' is set by the study ({_OWNED_WHY[key]})")
        recipe = entry.get("recipe")
        if recipe is not None:
            recipe = _resolve_recipe_ref(str(recipe), base_dir, where)
        out.append(ModelSpec(name, fragment, recipe, str(entry.get("description") or "")))
    return out


def _resolve_recipe_ref(ref: str, base_dir: Path | None, where: str) -> str:
    """A recipe file next to the study file, a path, or a shipped recipe's name."""
    from volrot.config import resolve_recipe_path

    if base_dir is not None and (base_dir / ref).is_file():
        return str((base_dir / ref).resolve())
    try:
        resolve_recipe_path(ref)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return ref


def cell_name(model: str, seed: int) -> str:
    """Run folder name of the cell (model, seed)."""
    return f"{model}-seed{seed}"


def cell_recipe(spec: StudySpec, model: ModelSpec, seed: int, study_dir: Path):
    """The validated `Recipe` of the cell (model, seed) (see the module docstring for precedence)."""
    from volrot.config import (
        load_recipe_file,
        merge,
        recipe_from_dict,
        validate_model_options,
    )
    from volrot.engine.augment import check_augment

    source = f"{spec.source}: model '{model.name}'"
    raw: dict[str, Any] = {"optim": dict(spec.optim), "train": dict(spec.train)}
    if model.recipe:
        raw = merge(raw, {k: v for k, v in load_recipe_file(model.recipe).items() if k != "data"})
        if "device" in spec.train:  # where the study runs beats a recipe file's device
            raw["train"]["device"] = spec.train["device"]
    raw = merge(raw, model.fragment)
    if "arch" not in raw.get("model", {}):
        raise UserError(f"{source}: no 'model.arch' (give it in the entry or its recipe)")
    raw = merge(raw, {"data": spec.data})
    raw = merge(raw, {"train": {"seed": seed, "out": str(study_dir), "name": cell_name(model.name, seed)}})
    try:
        recipe = recipe_from_dict(raw, source=source)
        validate_model_options(recipe)
        check_augment(recipe.train.augment)
    except UserError as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    return recipe


def eval_parameters() -> dict[str, Any]:
    """The options of `evaluate_checkpoint` a study's `eval` may set, with their defaults."""
    from volrot.engine.eval_rotated import evaluate_checkpoint

    sig = inspect.signature(evaluate_checkpoint)
    return {
        name: (None if p.default is inspect.Parameter.empty else p.default)
        for name, p in sig.parameters.items()
        if name not in _EVAL_OWNED and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def check_eval_options(options: dict[str, Any], source: str) -> None:
    """Unknown keys and bad protocol/angle/n/mask values are a `UserError` (nothing runs)."""
    from volrot.engine.rotated import MASKS, build_protocols

    known = eval_parameters()
    for key in options:
        if key not in known:
            raise UserError(f"{source}: unknown study key 'eval.{key}' (known: {', '.join(known)})")
    merged = {**known, **options}
    # the rotation-set options build_protocols knows (protocols, angles, n, seed, and any it grows)
    accepted = inspect.signature(build_protocols).parameters
    kwargs = {k: v for k, v in merged.items() if k in accepted and k != "protocols"}
    try:
        for k in ("angles", "n", "seed"):
            if k in kwargs:
                kwargs[k] = (float if k == "angles" else int)(kwargs[k])
        build_protocols(merged["protocols"], **kwargs)
    except (TypeError, ValueError):
        raise UserError(f"{source}: 'eval.angles', 'eval.n' and 'eval.seed' must be numbers") from None
    except UserError as e:
        raise UserError(f"{source}: eval: {e}") from None
    if merged.get("mask") not in MASKS:
        raise UserError(f"{source}: 'eval.mask' must be one of {', '.join(MASKS)}, got {merged.get('mask')!r}")
    ms = merged.get("max_samples")
    if ms is not None and (not isinstance(ms, int) or isinstance(ms, bool) or ms < 1):
        raise UserError(f"{source}: 'eval.max_samples' must be a positive integer (number of test volumes), got {ms!r}")


def eval_options(spec: StudySpec, recipe) -> dict[str, Any]:
    """Keyword arguments for `evaluate_checkpoint` of one cell (device: the cell's by default)."""
    opts = {k: v for k, v in spec.eval.items()}
    opts.setdefault("device", recipe.train.device)
    return opts


def recipe_difference(expected: dict[str, Any], found: dict[str, Any]) -> str | None:
    """The first recipe key (section.key) whose value differs, ignoring where/how it runs."""
    ignore = {("train", "out"), ("train", "device"), ("train", "num_workers"), ("train", "threads")}
    for section in sorted(set(expected) | set(found)):
        a, b = expected.get(section) or {}, found.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if (section, key) in ignore:
                continue
            if key not in b and _norm(a.get(key)) == _norm(_default(section, key, a.get("arch") or b.get("arch"))):
                continue  # a key volrot gained after the cell was trained, at its default
            if _norm(a.get(key)) != _norm(b.get(key)):
                return f"{section}.{key}: {b.get(key)!r} in the folder, {a.get(key)!r} in the study"
    return None


_NO_DEFAULT = object()


def _default(section: str, key: str, arch: str | None) -> Any:
    """The value a recipe key has when it is not written (model options: the arch's default)."""
    from volrot.config import recipe_from_dict

    if section == "model":
        from volrot.models.catalog import catalog_entry

        return catalog_entry(arch).defaults.get(key, _NO_DEFAULT) if arch else _NO_DEFAULT
    return (recipe_from_dict({}).to_dict().get(section) or {}).get(key, _NO_DEFAULT)


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v

