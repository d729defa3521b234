"""The model card: what a volrot model file says about itself, typed and validated once.

Every model file volrot writes carries one JSON card (safetensors header key ``volrot`` for
checkpoints, ONNX ``metadata_props["volrot"]``, ``extra/volrot.json`` in TorchScript/pt2
archives). `ModelCard.from_dict` is the only parser: checkpoints, exports, `predict`,
`eval-rotated`, `inspect-activation` and `load_model` all read the card through it, so a card is
validated in one place, when the file is opened, and code after that reads typed fields.

Each fact is stored once (schema 2):

- ``arch`` and ``model_options`` (the arch's own options, e.g. ``width``); the builder's
  ``num_classes`` is ``len(class_names)`` and its ``in_channels`` is ``input.shape[0]``;
- ``class_names``: one name per logit;
- ``input``: ``{"shape": [C, D, H, W], "dtype": "float32"}``;
- ``preprocessing``: executable, one of two kinds:
  - ``{"source": "volume", ...}``: the NIfTI/DICOM pipeline's `PreprocessSpec` (RAS
    reorientation, spacing, intensity window, size), applied by `volrot.data.preprocess`;
  - any other ``source`` (``medmnist``, ``generated``): arrays used as-is in file voxel order,
    mapped by ``value * scale + offset`` with ``scale`` and ``offset`` recorded as numbers
    (MedMNIST: ``scale = 1/255``). Other keys (``flag``, ``size``...) describe the data only;
- ``data``: the training data's name, task, split sizes and source details (no copies of the
  class names, input size or preprocessing);
- ``recipe`` (the training recipe), ``metrics``, ``epoch``, ``selected_by``, ``parameters``;
- ``versions``: ``{"volrot": ..., "torch": ...}`` that wrote the weights;
- ``export`` (exports only): format, exporter, opset, source checkpoint and its SHA-256,
  tolerance, versions.

Schema 1 (``format_version: 1``, written by volrot 0.1 before the card) is converted here:
``model_config`` held ``num_classes``/``in_channels`` as well, and the as-is intensity mapping
was prose (``"uint8 / 255 -> [0, 1]"``), so source ``medmnist`` becomes ``scale = 1/255`` and
any other non-volume source ``scale = 1`` (what volrot 0.1's predict did).

Limits (`MAX_INPUT_ELEMENTS`, `MAX_CLASSES`) bound what a card may ask for before anything is
allocated; the model's size is bounded by `volrot.models.registry.MAX_MODEL_ELEMENTS`.
This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from volrot.errors import UserError

SCHEMA_VERSION = 2
CHECKPOINT = "volrot-checkpoint"
EXPORT = "volrot-export"
FORMATS = (CHECKPOINT, EXPORT)

#: Largest model input a card may record: C·D·H·W elements per sample (64 MiB as float32,
#: e.g. 1×256³). Export and inspection allocate a few samples of this size.
MAX_INPUT_ELEMENTS = 2**24
#: Most classes (logits) a card may name.
MAX_CLASSES = 100_000
#: Largest card, in bytes of JSON (a recipe and metrics are a few kB).
MAX_CARD_BYTES = 16 * 2**20

#: MedMNIST stores uint8 voxels; training divides by 255 (schema-1 cards said so in prose only).
_V1_SCALES = {"medmnist": 1.0 / 255.0}
_DATA_DUPLICATES = ("class_names", "in_channels", "input_size", "preprocessing")


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, int, int, int]  # (C, D, H, W)
    dtype: str = "float32"

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> tuple[int, int, int]:
        return self.shape[1], self.shape[2], self.shape[3]

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class AsIsPreprocessing:
    """Arrays without physical geometry (MedMNIST, generated shapes): the file's voxel array
    is used in file voxel order, mapped by `value * scale + offset`, never resampled."""

    scale: float
    offset: float = 0.0
    source: str = "unknown"
    details: Mapping[str, Any] = field(default_factory=dict)  # descriptive only (flag, size, ...)

    mode = "as-is"

    def apply(self, array):
        """`array * scale + offset` as float32 (numpy)."""
        import numpy as np

        out = np.asarray(array, dtype=np.float32)
        if self.scale != 1.0:
            out = out * np.float32(self.scale)
        if self.offset != 0.0:
            out = out + np.float32(self.offset)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.details, "source": self.source, "scale": self.scale, "offset": self.offset}


@dataclass(frozen=True)
class RecordedPreprocessing:
    """NIfTI/DICOM volumes: the recorded `PreprocessSpec`, applied as in training."""

    spec: Any  # volrot.data.preprocess.PreprocessSpec

    mode = "recorded"

    def to_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()


@dataclass(frozen=True)
class ModelCard:
    format: str  # CHECKPOINT | EXPORT
    arch: str
    model_options: Mapping[str, Any]
    class_names: tuple[str, ...]
    input: InputSpec
    preprocessing: AsIsPreprocessing | RecordedPreprocessing
    data: Mapping[str, Any] = field(default_factory=dict)
    recipe: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    selected_by: str | None = None
    parameters: int | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    export: Mapping[str, Any] | None = None

    # --- derived facts (stored once, in the fields above) ------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.input.channels

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.input.shape

    @property
    def model_config(self) -> dict[str, Any]:
        """The registry builder's keyword arguments: `create_model(card.arch, **card.model_config)`."""
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, **self.model_options}

    @property
    def trained_on(self) -> str:
        return str(self.data.get("name") or getattr(self.preprocessing, "source", None) or "unknown data")

    # --- checks against what is really there ------------------------------------------------

    def check_output_width(self, width: int, where: str) -> None:
        """`UserError` unless the model returns one logit per class name."""
        if int(width) != self.num_classes:
            raise UserError(
                f"{where}: the model returns {int(width)} logits but its metadata names {self.num_classes} "
                f"class(es) ({', '.join(self.class_names[:4])}{', ...' if self.num_classes > 4 else ''})"
            )

    # --- (de)serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": self.format,
            "schema_version": SCHEMA_VERSION,
            "arch": self.arch,
            "model_options": dict(self.model_options),
            "class_names": list(self.class_names),
            "input": self.input.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "data": dict(self.data),
            "recipe": dict(self.recipe) if self.recipe is not None else None,
            "metrics": dict(self.metrics),
            "epoch": self.epoch,
            "selected_by": self.selected_by,
            "parameters": self.parameters,
            "versions": dict(self.versions),
        }
        if self.export is not None:
            d["export"] = dict(self.export)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=True)  # a NaN metric (e.g. AUC of one class) stays readable

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str, formats: tuple[str, ...] = FORMATS) -> "ModelCard":
        if len(text) > MAX_CARD_BYTES:
            raise UserError(f"{where}: volrot metadata is {len(text)} bytes (limit {MAX_CARD_BYTES})")
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise UserError(f"{where}: corrupt volrot metadata (not JSON)") from None
        return cls.from_dict(raw, where=where, formats=formats)

    @classmethod
    def from_dict(cls, raw: Any, *, where: str, formats: tuple[str, ...] = FORMATS) -> "ModelCard":
        """Validate `raw` (parsed JSON) and build the card; any problem is one `UserError`
        naming `where` and the field. Schema-1 metadata is converted."""
        if not isinstance(raw, dict):
            raise UserError(f"{where}: volrot metadata must be a JSON object, got a JSON {_json_type(raw)}")
        fmt = raw.get("format")
        if fmt not in formats:
            wanted = " or ".join(formats)
            if fmt == CHECKPOINT + "-train-state":
                raise UserError(f"{where}: a training-state file, not a model checkpoint (use best.safetensors)")
            raise UserError(f"{where}: not a {wanted} file (metadata format {fmt!r})")
        version = raw.get("schema_version")
        if version is None:
            if raw.get("format_version") != 1:
                raise UserError(f"{where}: volrot metadata without a schema version (format_version {raw.get('format_version')!r})")
            raw = _convert_v1(raw, where)
        elif version != SCHEMA_VERSION:
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise UserError(f"{where}: model card schema {version} is newer than this volrot reads ({SCHEMA_VERSION}); upgrade volrot")
            raise UserError(f"{where}: unknown model card schema {version!r}")
        return _parse_v2(raw, where)


# --- parsing ------------------------------------------------------------------------------------

_V2_KEYS = {
    "format", "schema_version", "arch", "model_options", "class_names", "input", "preprocessing", "data",
    "recipe", "metrics", "epoch", "selected_by", "parameters", "versions", "export",
}  # fmt: skip


def _json_type(v: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _mapping(raw: dict, key: str, where: str, *, required: bool = False, nullable: bool = False) -> dict | None:
    v = raw.get(key)
    if v is None:
        if required:
            raise UserError(f"{where}: volrot metadata has no '{key}'")
        return None if nullable else {}
    if not isinstance(v, dict):
        raise UserError(f"{where}: metadata '{key}' must be a JSON object, got a JSON {_json_type(v)}")
    return v


def _int(v: Any, what: str, where: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise UserError(f"{where}: metadata '{what}' must be an integer >= {lo}, got {v!r}")
    return v


def _number(v: Any, what: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError(f"{where}: metadata '{what}' must be a finite number, got {v!r}")
    return float(v)


def _parse_v2(raw: dict, where: str) -> ModelCard:
    unknown = sorted(set(raw) - _V2_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' in volrot metadata")
    arch = raw.get("arch")
    if not isinstance(arch, str) or not arch:
        raise UserError(f"{where}: metadata 'arch' must be an arch name, got {arch!r}")
    options = _mapping(raw, "model_options", where, required=True)
    for reserved in ("num_classes", "in_channels"):
        if reserved in options:
            raise UserError(f"{where}: metadata 'model_options.{reserved}' is not an option (it comes from class_names / input)")
    class_names = _class_names(raw.get("class_names"), where)
    spec = _input_spec(raw.get("input"), where)
    pre = _preprocessing(raw.get("preprocessing"), spec, where)
    epoch = raw.get("epoch")
    params = raw.get("parameters")
    selected = raw.get("selected_by")
    if selected is not None and not isinstance(selected, str):
        raise UserError(f"{where}: metadata 'selected_by' must be a string, got {selected!r}")
    versions = _mapping(raw, "versions", where)
    if not all(isinstance(v, str) for v in versions.values()):
        raise UserError(f"{where}: metadata 'versions' must map names to version strings")
    export = _mapping(raw, "export", where, nullable=True)
    if raw["format"] == EXPORT and export is None:
        raise UserError(f"{where}: volrot export metadata without its 'export' block")
    return ModelCard(
        format=raw["format"],
        arch=arch,
        model_options=dict(options),
        class_names=class_names,
        input=spec,
        preprocessing=pre,
        data=_mapping(raw, "data", where),
        recipe=_mapping(raw, "recipe", where, nullable=True),
        metrics=_mapping(raw, "metrics", where),
        epoch=None if epoch is None else _int(epoch, "epoch", where),
        selected_by=selected,
        parameters=None if params is None else _int(params, "parameters", where),
        versions=dict(versions),
        export=export,
    )


def _class_names(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        raise UserError(f"{where}: volrot metadata has no 'class_names'")
    if not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v):
        raise UserError(f"{where}: metadata 'class_names' must be a non-empty list of strings")
    if len(v) > MAX_CLASSES:
        raise UserError(f"{where}: metadata names {len(v)} classes (limit {MAX_CLASSES})")
    if len(set(v)) != len(v):
        raise UserError(f"{where}: metadata 'class_names' repeats a name")
    return tuple(v)


def _input_spec(v: Any, where: str) -> InputSpec:
    if v is None:
        raise UserError(f"{where}: volrot metadata has no 'input'")
    if not isinstance(v, dict):
        raise UserError(f"{where}: metadata 'input' must be a JSON object, got a JSON {_json_type(v)}")
    shape = v.get("shape")
    if not isinstance(shape, list) or len(shape) != 4 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise UserError(f"{where}: metadata 'input.shape' must be 4 positive integers [C, D, H, W], got {shape!r}")
    n = math.prod(shape)
    if n > MAX_INPUT_ELEMENTS:
        raise UserError(
            f"{where}: metadata input shape {'×'.join(map(str, shape))} is {n:,} values per sample "
            f"(limit {MAX_INPUT_ELEMENTS:,}); refusing before allocating it"
        )
    dtype = v.get("dtype", "float32")
    if dtype != "float32":
        raise UserError(f"{where}: metadata 'input.dtype' must be float32, got {dtype!r}")
    return InputSpec(tuple(shape), dtype)  # type: ignore[arg-type]


def _preprocessing(v: Any, spec: InputSpec, where: str) -> AsIsPreprocessing | RecordedPreprocessing:
    if not isinstance(v, dict):
        raise UserError(f"{where}: metadata 'preprocessing' must be a JSON object, got a JSON {_json_type(v)}")
    source = v.get("source")
    if source == "volume":
        from volrot.data.preprocess import PreprocessSpec

        pre = PreprocessSpec.from_dict(v, where=f"{where}: preprocessing")
        if tuple(pre.size) != spec.size:
            raise UserError(f"{where}: preprocessing size {list(pre.size)} differs from the input shape {list(spec.size)}")
        return RecordedPreprocessing(pre)
    if not isinstance(source, str) or not source:
        raise UserError(f"{where}: metadata 'preprocessing.source' must name the data source, got {source!r}")
    if "scale" not in v:
        raise UserError(f"{where}: as-is preprocessing without its 'scale' (how voxel values map to the model's input)")
    scale = _number(v["scale"], "preprocessing.scale", where)
    offset = _number(v.get("offset", 0.0), "preprocessing.offset", where)
    if scale == 0.0:
        raise UserError(f"{where}: metadata 'preprocessing.scale' must not be 0")
    details = {k: x for k, x in v.items() if k not in ("source", "scale", "offset")}
    return AsIsPreprocessing(scale=scale, offset=offset, source=source, details=details)


def _convert_v1(raw: dict, where: str) -> dict:
    """Schema 1 (volrot 0.1) -> schema 2, checking the facts that were stored twice."""
    config = _mapping(raw, "model_config", where, required=True)
    config = dict(config)
    k = config.pop("num_classes", None)
    c = config.pop("in_channels", None)
    k = _int(k, "model_config.num_classes", where, lo=1)
    c = _int(c, "model_config.in_channels", where, lo=1)
    names = raw.get("class_names")
    if names is None and isinstance(raw.get("data"), dict):
        names = raw["data"].get("class_names")
    names = list(_class_names(names, where))
    if len(names) != k:
        raise UserError(f"{where}: metadata names {len(names)} class(es) but model_config.num_classes is {k}")
    spec = _input_spec(raw.get("input"), where)
    if spec.channels != c:
        raise UserError(f"{where}: metadata input has {spec.channels} channel(s) but model_config.in_channels is {c}")
    pre = raw.get("preprocessing")
    if pre is None and isinstance(raw.get("data"), dict):
        pre = raw["data"].get("preprocessing")
    if not isinstance(pre, dict):
        raise UserError(f"{where}: metadata 'preprocessing' must be a JSON object, got a JSON {_json_type(pre)}")
    if pre.get("source") != "volume":
        source = str(pre.get("source") or "unknown")
        pre = {**pre, "source": source, "scale": _V1_SCALES.get(source, 1.0), "offset": 0.0}
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    versions = {name: raw[f"{name}_version"] for name in ("volrot", "torch") if isinstance(raw.get(f"{name}_version"), str)}
    out = {
        "format": raw["format"],
        "schema_version": SCHEMA_VERSION,
        "arch": raw.get("arch"),
        "model_options": config,
        "class_names": names,
        "input": spec.to_dict(),
        "preprocessing": pre,
        "data": {key: v for key, v in data.items() if key not in _DATA_DUPLICATES},
        "versions": versions,
    }
    for key in ("recipe", "metrics", "epoch", "selected_by", "parameters", "export"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    return out


def data_description(described: Mapping[str, Any] | None) -> dict[str, Any]:
    """A `DataBundle.describe()` without the facts the card stores elsewhere."""
    return {k: v for k, v in (described or {}).items() if k not in _DATA_DUPLICATES}
