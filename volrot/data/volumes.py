"""`--data nifti:PATH` / `--data dicom:PATH`: a manifest or class folders -> `DataBundle`.

Every volume is read and preprocessed here, when the data are loaded, before any run folder
exists: a bad file fails the load with a `UserError` (exit 2) and leaves nothing behind, and
the epochs then read preprocessed arrays from memory (see `volrot.data.cache`; set
`data.cache_dir` to also keep them on disk between runs).

`bundle.info["split"]` lists every volume as `{path, label, split}`; the trainer writes it into
the run folder, so a drawn split can be reproduced and audited. The same content under two
labels or in two splits (identical preprocessed voxels, or one DICOM SeriesInstanceUID) is
refused unless `data.allow_duplicates` is true (`volrot.data.duplicates`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from volrot.config import DataConfig
from volrot.data.base import DataBundle
from volrot.data.cache import cached_preprocess
from volrot.data.manifest import (
    SPLITS,
    Entry,
    class_names,
    label_index,
    read_class_folders,
    read_manifest,
    stratified_split,
)
from volrot.data.duplicates import check_duplicates, voxel_hash
from volrot.data.preprocess import PreprocessSpec, spec_from_options
from volrot.errors import UserError


class PreprocessedDataset(Dataset):
    """Preprocessed volumes `(1, D, H, W)` float32 held in memory, with integer labels."""

    def __init__(self, arrays: list[np.ndarray], labels: list[int], paths: list[str]):
        self.arrays = arrays
        self.labels = labels
        self.paths = paths

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.arrays[i], dtype=np.float32)), int(self.labels[i])


def collect_entries(path: Path, kind: str) -> tuple[list[Entry], str]:
    """(entries, layout) from a CSV manifest or a class-folder tree."""
    if not path.exists():
        raise UserError(f"--data {kind}:{path}: {path} does not exist")
    if path.is_dir():
        return read_class_folders(path, kind), "folders"
    if path.suffix.lower() != ".csv":
        raise UserError(f"--data {kind}:{path}: expected a CSV manifest (.csv) or a folder of class subfolders")
    return read_manifest(path, kind), "manifest"


def assign_splits(entries: list[Entry], labels: list[int], cfg: DataConfig, where: str) -> tuple[list[str], str]:
    if entries[0].split is not None:
        splits = [e.split for e in entries]
        origin = "manifest"
    else:
        fr = list(cfg.split_fractions)
        if len(fr) != 3 or any(f < 0 for f in fr) or not abs(sum(fr) - 1.0) < 1e-6 or fr[0] <= 0:
            raise UserError(f"data.split_fractions must be 3 non-negative fractions summing to 1 (train > 0), got {fr}")
        splits = stratified_split(labels, fr, cfg.split_seed)
        origin = f"seeded stratified split {fr} (seed {cfg.split_seed})"
    for s in SPLITS:
        if s not in splits:
            hint = "add rows for it" if origin == "manifest" else "add volumes or give a split column"
            raise UserError(f"{where}: no {s} volumes ({len(entries)} in all); {hint}")
    train_labels = {l for l, s in zip(labels, splits) if s == "train"}
    for e, l, s in zip(entries, labels, splits):
        if l not in train_labels:
            raise UserError(f"{e.where}: label '{e.label}' appears in {s} but not in train (unknown to the model)")
    return splits, origin


def _series_uid(e: Entry) -> str:
    """The SeriesInstanceUID of a DICOM entry (headers only; the folder was read already)."""
    if e.series_uid:
        return e.series_uid
    from volrot.data.dicom import series_files

    return series_files(e.path)[0]


def load_volumes(cfg: DataConfig, kind: str) -> DataBundle:
    """Build the bundle for `--data nifti:PATH` or `--data dicom:PATH` (`kind` = nifti|dicom)."""
    raw = cfg.name.split(":", 1)[1].strip()
    if not raw:
        raise UserError(f"--data {kind}: needs a path, e.g. --data {kind}:data/manifest.csv")
    path = Path(raw).expanduser()
    spec: PreprocessSpec = spec_from_options(cfg.preprocess, cfg.size)
    entries, layout = collect_entries(path, kind)
    where = str(path)
    names = class_names([e.label for e in entries], where)
    labels = [label_index(e.label, names) for e in entries]
    splits, origin = assign_splits(entries, labels, cfg, where)

    parts: dict[str, tuple[list, list, list]] = {s: ([], [], []) for s in SPLITS}
    seen: list[dict] = []  # for the duplicate check
    for e, l, s in zip(entries, labels, splits):
        arrays, labs, paths = parts[s]
        if cfg.max_samples is not None and len(labs) >= cfg.max_samples:
            continue
        try:
            arrays.append(cached_preprocess(e.path, spec, e.center, e.series_uid, cfg.cache_dir))
        except UserError as err:
            if layout != "manifest":
                raise
            raise UserError(f"{err} ({e.where})") from None
        labs.append(l)
        paths.append(str(e.path))
        seen.append({"path": str(e.path), "label": names[l], "split": s, "voxel_hash": voxel_hash(arrays[-1]),
                     "series_uid": _series_uid(e) if kind == "dicom" else None})  # fmt: skip
    duplicates = check_duplicates(seen, where, allow=bool(cfg.allow_duplicates))
    datasets = {s: PreprocessedDataset(*parts[s]) for s in SPLITS}
    split_record = [
        {"path": str(e.path), "label": names[l], "split": s, **({"series_uid": e.series_uid} if e.series_uid else {})}
        for e, l, s in zip(entries, labels, splits)
    ]
    return DataBundle(
        name=f"{kind}:{path.resolve()}",
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        class_names=names,
        in_channels=1,
        input_size=tuple(int(s) for s in spec.size),
        task="binary" if len(names) == 2 else "multi-class",
        preprocessing=spec.to_dict(),
        info={
            "source": str(path.resolve()),
            "format": kind,
            "layout": layout,
            "split_origin": origin,
            "split": split_record,
            **({"duplicates": duplicates} if duplicates else {}),
        },
    )
