"""Recipes: YAML files describing one training run, with validation and `--set` overrides.

A recipe has four sections; every `volrot train` flag maps onto one key::

    model:  {arch: resnet3d, <arch options, e.g. width: 8>}      --arch, --set model.width=8
    data:   {name: shapes, root: null, size: 28, ...}             --data, --root, --size
    optim:  {name: adam, lr: 0.001, weight_decay: 0, ...}         --lr
    train:  {epochs, batch_size, seed, device, augment, amp, out}  --epochs --batch-size ...

Unknown keys are a `UserError` naming the key (exit 2), and so are values out of range
(`check_values`: non-finite or non-positive learning rate, negative workers, list elements that
are not numbers, `data.max_samples: 0`, a `train.name` that is a path...). Arch options are
validated against the registry when the model is built (and once more here, up front, by
`validate_model_options`).
The effective recipe is written into the run folder as `recipe.yaml`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from volrot.errors import UserError

REPO_RECIPES = Path(__file__).resolve().parent / "recipes"


@dataclass
class ModelConfig:
    arch: str = "resnet3d"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = "shapes"
    root: str | None = None
    size: int = 28
    verify: bool = True  # check MD5 of MedMNIST files
    max_samples: int | None = None  # per split, for quick runs and tests (first N of each split)
    split_seed: int = 0  # seeded stratified split for NIfTI/DICOM sources without a split column
    preprocess: dict[str, Any] = field(default_factory=dict)  # NIfTI/DICOM pipeline options
    download: bool = False  # MedMNIST: fetch a missing file (needs network and torchvision)
    cache_dir: str | None = None  # NIfTI/DICOM: keep preprocessed volumes here between runs
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # drawn split
    allow_duplicates: bool = False  # NIfTI/DICOM: same content in two classes/splits is an error unless true


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of epochs
    gamma: float = 0.1
    # The epoch count the milestones are fractions of (default: train.epochs). A run extended
    # with `--resume RUN --epochs N` keeps its original value, so its schedule is not re-derived.
    schedule_epochs: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    augment: str = "none"  # none | so3 | octahedral | resample
    amp: bool = True  # bf16 mixed precision on CUDA (on the CPU only with cpu_amp)
    cpu_amp: bool = False  # bf16 autocast on the CPU too (AMX/AVX512-BF16 CPUs; docs/benchmarks.md)
    num_workers: int = 0
    out: str = "runs"
    name: str | None = None  # run folder name; default <arch>-<data>-<timestamp>
    threads: int | None = None  # CPU threads; default OMP_NUM_THREADS, else the idle cores
    ddp_timeout_s: float = 600.0  # torchrun: a collective waiting longer than this ends the run


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        model = {"arch": d["model"]["arch"], **d["model"]["options"]}
        return {"model": model, "data": d["data"], "optim": d["optim"], "train": d["train"]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def _coerce(section: str, key: str, value: Any, typ: Any) -> Any:
    """Check a YAML value against the field's annotated type (as a string annotation)."""
    t = str(typ)
    if value is None:
        if "None" in t:
            return None
        raise UserError(f"recipe key '{section}.{key}' must not be null")
    if t.startswith("int") and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            return value
        raise UserError(f"recipe key '{section}.{key}' must be an integer, got {value!r}")
    if t.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise UserError(f"recipe key '{section}.{key}' must be a finite number, got {value!r}")
            return float(value)
        raise UserError(f"recipe key '{section}.{key}' must be a number, got {value!r}")
    if t.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise UserError(f"recipe key '{section}.{key}' must be true or false, got {value!r}")
    if t.startswith("str"):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"recipe key '{section}.{key}' must be a string, got {value!r}")
    if t.startswith("list"):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"recipe key '{section}.{key}' must be a list, got {value!r}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise UserError(f"recipe key '{section}.{key}' must be a list of finite numbers, got {list(value)!r}")
        return [float(v) for v in value]
    if t.startswith("dict"):
        if isinstance(value, dict):
            return dict(value)
        raise UserError(f"recipe key '{section}.{key}' must be a mapping, got {value!r}")
    return value


def recipe_from_dict(raw: dict[str, Any] | None, source: str = "recipe") -> Recipe:
    """Build a validated `Recipe` from a nested dict (unknown sections/keys are errors)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a recipe must be a YAML mapping")
    recipe = Recipe()
    for section, values in raw.items():
        if section == "model":
            if not isinstance(values, dict):
                raise UserError(f"{source}: 'model' must be a mapping")
            values = dict(values)
            if "arch" in values:
                recipe.model.arch = str(values.pop("arch"))
            recipe.model.options.update(values)
            continue
        if section not in _SECTIONS:
            raise UserError(f"{source}: unknown recipe section '{section}' (known: model, data, optim, train)")
        if not isinstance(values, dict):
            raise UserError(f"{source}: '{section}' must be a mapping")
        target = getattr(recipe, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in fields:
                raise UserError(f"{source}: unknown recipe key '{section}.{key}'")
            setattr(target, key, _coerce(section, key, value, fields[key].type))
    check_values(recipe, source)
    return recipe


MAX_RUN_NAME_CHARS = 128


def check_run_name(name: str, what: str = "train.name") -> str:
    """A run name is one folder name: no path separators, not `.`/`..`, no control characters
    (NUL included), at most `MAX_RUN_NAME_CHARS` characters (and 255 bytes as UTF-8)."""
    shown = name if len(name) <= 40 else name[:37] + "..."
    if not name.strip():
        raise UserError(f"{what} must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"{what} {shown!r} holds a control character; a run name is a plain folder name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UserError(f"{what} {shown!r} is a path; a run name is one folder name (the folder goes under --out)")
    if len(name) > MAX_RUN_NAME_CHARS or len(name.encode("utf-8")) > 255:
        raise UserError(f"{what} is {len(name)} characters long; at most {MAX_RUN_NAME_CHARS} are allowed")
    return name


def _need(ok: bool, source: str, key: str, rule: str, value: Any) -> None:
    if not ok:
        where = "" if source == "recipe" else f"{source}: "
        raise UserError(f"{where}recipe key '{key}' must be {rule}, got {value!r}")


def check_values(recipe: Recipe, source: str = "recipe") -> None:
    """Ranges of the recipe's values (types were checked by `_coerce`); `UserError` naming the key."""
    d, o, t = recipe.data, recipe.optim, recipe.train
    _need(o.lr > 0, source, "optim.lr", "a positive number", o.lr)
    _need(o.weight_decay >= 0, source, "optim.weight_decay", "zero or positive", o.weight_decay)
    _need(o.momentum >= 0, source, "optim.momentum", "zero or positive", o.momentum)
    _need(o.gamma > 0, source, "optim.gamma", "a positive number", o.gamma)
    _need(all(0 <= f <= 1 for f in o.milestones), source, "optim.milestones", "fractions of the epochs in [0, 1]", o.milestones)
    _need(t.epochs >= 1, source, "train.epochs", "at least 1", t.epochs)
    _need(t.batch_size >= 1, source, "train.batch_size", "at least 1", t.batch_size)
    _need(t.num_workers >= 0, source, "train.num_workers", "0 or more", t.num_workers)
    _need(t.ddp_timeout_s > 0, source, "train.ddp_timeout_s", "a positive number of seconds", t.ddp_timeout_s)
    _need(t.threads is None or t.threads >= 1, source, "train.threads", "at least 1 (or null: automatic)", t.threads)
    _need(o.schedule_epochs is None or o.schedule_epochs >= 1, source, "optim.schedule_epochs",
          "at least 1 (or null: train.epochs)", o.schedule_epochs)  # fmt: skip
    _need(d.size >= 2, source, "data.size", "at least 2", d.size)
    _need(d.max_samples is None or d.max_samples >= 1, source, "data.max_samples", "at least 1 (or null for all)", d.max_samples)
    if t.name is not None:
        check_run_name(t.name)


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped inside the package (`volrot/recipes/<name>.yaml`)."""
    return sorted(p.stem for p in REPO_RECIPES.glob("*.yaml"))


def resolve_recipe_path(path: str | Path) -> Path:
    """A recipe file, or the name of a shipped recipe (`resnet3d_shapes`, `equilopo_nodule.yaml`)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = REPO_RECIPES / (p.name if p.suffix == ".yaml" else f"{p.name}.yaml")
    if p.parent in (Path("."), Path("recipes")) and shipped.is_file():
        return shipped
    raise UserError(f"recipe file not found: {p} (shipped recipes: {', '.join(shipped_recipes())})")


def read_yaml(p: Path) -> Any:
    """A YAML file's content (safe loader, UTF-8); invalid YAML is a `UserError` naming the line."""
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{p}: not valid YAML{where}") from None


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    p = resolve_recipe_path(path)
    raw = read_yaml(p)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{p}: a recipe must be a YAML mapping")
    return raw


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set section.key=value` (value parsed as YAML) to a raw recipe dict."""
    if "=" not in assignment:
        raise UserError(f"--set expects KEY=VALUE, got '{assignment}'")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"--set key must look like section.key (e.g. optim.lr), got '{key}'")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    section, name = parts
    sec = raw.setdefault(section, {})
    if not isinstance(sec, dict):
        raise UserError(f"recipe section '{section}' must be a mapping")
    sec[name] = value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Two-level merge of raw recipe dicts (sections, then keys)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in over.items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section].update(values)
        else:
            out[section] = values
    return out


def canonical_name(name: str) -> str:
    """Short dataset name used for recipe lookup: 'nodulemnist3d' -> 'nodule', 'nifti:x' -> 'nifti'."""
    n = name.strip()
    low = n.lower()
    if low.startswith(("nifti:", "dicom:")):
        return low.split(":", 1)[0]
    if low.endswith("mnist3d"):
        return low[: -len("mnist3d")]
    return low


def find_recipe(arch: str, dataset: str) -> Path | None:
    """The shipped recipe for an (arch, dataset) pair, e.g. volrot/recipes/equilopo_nodule.yaml."""
    p = REPO_RECIPES / f"{arch}_{dataset}.yaml"
    return p if p.is_file() else None


def validate_model_options(recipe: Recipe) -> None:
    """Fail early (before any data is read, torch not imported) on an unknown arch or arch option."""
    from volrot.models.catalog import check_options

    check_options(recipe.model.arch, recipe.model.options)


#: `volrot train` flags and the recipe keys they set.
FLAG_KEYS = {
    "arch": ("model", "arch"),
    "data": ("data", "name"),
    "root": ("data", "root"),
    "size": ("data", "size"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("optim", "lr"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "out": ("train", "out"),
    "augment": ("train", "augment"),
    "name": ("train", "name"),
    "download": ("data", "download"),
    "verify": ("data", "verify"),
    "threads": ("train", "threads"),
}


def build_recipe(
    recipe_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Recipe:
    """The effective recipe of `volrot train`.

    Precedence, lowest first: built-in defaults < the shipped recipe for the (arch, dataset)
    pair (`volrot/recipes/<arch>_<dataset>.yaml`, if any) < `--recipe FILE` < flags < `--set`.
    The pair is read from the higher layers, so `volrot train --arch equilopo --data nodule`
    picks up `volrot/recipes/equilopo_nodule.yaml`.
    """
    user: dict[str, Any] = load_recipe_file(recipe_file) if recipe_file else {}
    for flag, value in (flags or {}).items():
        if value is None:
            continue
        section, key = FLAG_KEYS[flag]
        user = merge(user, {section: {key: value}})
    for assignment in sets or []:
        apply_override(user, assignment)
    probe = recipe_from_dict(user, source=str(recipe_file or "recipe"))
    pair = find_recipe(probe.model.arch, canonical_name(probe.data.name))
    raw = merge(load_recipe_file(pair), user) if pair else user
    return recipe_from_dict(raw, source=str(recipe_file or pair or "recipe"))


def recorded_data_config(
    meta: dict[str, Any],
    *,
    source: str,
    data: str | None = None,
    root: str | None = None,
    **fields: Any,
) -> DataConfig:
    """The data config a checkpoint was trained with (`meta["recipe"]["data"]`).

    `data` replaces the dataset (and forgets the recorded root), `root` the folder, and any other
    `DataConfig` field can be set by keyword (e.g. `max_samples=4, download=False`).
    """
    recipe = meta.get("recipe") or {}
    cfg = recipe_from_dict({"data": recipe.get("data") or {}}, source=f"{source} (recorded data config)").data
    if data is not None:
        cfg.name, cfg.root = data, None
    if root is not None:
        cfg.root = root
    return dataclasses.replace(cfg, **fields)
