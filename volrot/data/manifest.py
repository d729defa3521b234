"""Which volumes a NIfTI/DICOM dataset holds: a CSV manifest or a folder of class subfolders.

CSV manifest (header row required; columns in any order)::

    path,label[,split][,center_x,center_y,center_z][,series_uid]

- `path`: relative to the manifest's folder (or absolute). NIfTI: a `.nii`/`.nii.gz` file;
  DICOM: a series folder.
- `label`: class name, or integers 0..K-1. Names are sorted to give class indices.
- `split`: `train`/`val`/`test` on every row, or the column left out (then a seeded,
  stratified 70/15/15 split is drawn and recorded).
- `center_x,center_y,center_z`: crop centre (all three or none; see `data.preprocess.center_space`).
- `series_uid` (DICOM only): the SeriesInstanceUID to read when a folder holds several series.

Folder layout: `ROOT/<class name>/<file.nii.gz>` (NIfTI) or `ROOT/<class name>/<series folder>/`
(DICOM). Hidden files and folders (`.DS_Store`...) are ignored.

Every problem is a `UserError` naming the manifest line or the folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from volrot.errors import UserError

SPLITS = ("train", "val", "test")
CENTER_COLUMNS = ("center_x", "center_y", "center_z")
KNOWN_COLUMNS = ("path", "label", "split", *CENTER_COLUMNS, "series_uid")


@dataclass(frozen=True)
class Entry:
    path: Path  # absolute
    label: str  # as written (class name or integer text)
    split: str | None = None
    center: tuple[float, float, float] | None = None
    series_uid: str | None = None
    where: str = ""  # "manifest.csv line 4" or the folder, for messages


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def read_manifest(path: Path, kind: str) -> list[Entry]:
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{src}: not a text CSV file") from None
    except OSError as e:
        raise UserError(f"{src}: cannot read manifest ({e.strerror})") from None
    rows = list(csv.reader(text.splitlines()))
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{src}: manifest is empty; expected a header 'path,label[,split]' and one row per volume")
    header_line, header = rows[0]
    columns = [c.strip().lower() for c in header]
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    if unknown:
        raise UserError(f"{src} line {header_line}: unknown column '{unknown[0]}' (columns: {', '.join(KNOWN_COLUMNS)})")
    for need in ("path", "label"):
        if need not in columns:
            raise UserError(f"{src} line {header_line}: header has no '{need}' column (first row must name the columns)")
    if len(set(columns)) != len(columns):
        raise UserError(f"{src} line {header_line}: a column is named twice")
    has_center = [c in columns for c in CENTER_COLUMNS]
    if any(has_center) and not all(has_center):
        raise UserError(f"{src} line {header_line}: give all of center_x, center_y, center_z or none")
    if "series_uid" in columns and kind != "dicom":
        raise UserError(f"{src} line {header_line}: column series_uid only applies to DICOM series")
    if len(rows) == 1:
        raise UserError(f"{src}: manifest has a header but no rows")

    base = path.parent
    entries: list[Entry] = []
    seen: dict[tuple, int] = {}
    for line, row in rows[1:]:
        where = f"{src} line {line}"
        if len(row) != len(columns):
            raise UserError(f"{where}: {len(row)} fields, the header has {len(columns)}")
        rec = {c: v.strip() for c, v in zip(columns, row)}
        if not rec["path"]:
            raise UserError(f"{where}: empty path")
        if not rec["label"]:
            raise UserError(f"{where}: empty label for {rec['path']}")
        p = Path(rec["path"]).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise UserError(f"{where}: {rec['path']} does not exist (looked for {p})")
        if kind == "nifti" and p.is_dir():
            raise UserError(f"{where}: {rec['path']} is a folder; NIfTI entries are files (use --data dicom:... for series)")
        if kind == "dicom" and not p.is_dir():
            raise UserError(f"{where}: {rec['path']} is a file; DICOM entries are series folders")
        split = rec.get("split") or None
        if split is not None:
            split = split.lower()
            if split not in SPLITS:
                raise UserError(f"{where}: split '{rec['split']}' is not one of train, val, test")
        center = None
        if all(has_center):
            try:
                center = tuple(float(rec[c]) for c in CENTER_COLUMNS)
            except ValueError:
                raise UserError(f"{where}: center_x/y/z must be numbers, got {[rec[c] for c in CENTER_COLUMNS]}") from None
            if not np.isfinite(center).all():
                raise UserError(f"{where}: center_x/y/z must be finite numbers")
        uid = rec.get("series_uid") or None
        ident = (str(p.resolve()), uid)
        if ident in seen:
            raise UserError(f"{where}: duplicate of line {seen[ident]} ({rec['path']})")
        seen[ident] = line
        entries.append(Entry(p, rec["label"], split, center, uid, where))
    if "split" in columns:
        missing = [e for e in entries if e.split is None]
        if missing:
            raise UserError(f"{missing[0].where}: empty split; give train/val/test on every row or drop the column")
    return entries


def read_class_folders(root: Path, kind: str) -> list[Entry]:
    src = str(root)
    children = sorted(p for p in root.iterdir() if _visible(p))
    classes = [p for p in children if p.is_dir()]
    if not children:
        raise UserError(f"{src}: folder is empty; expected one subfolder per class (or a CSV manifest)")
    if not classes:
        raise UserError(f"{src}: no class subfolders (found only files); expected ROOT/<class>/<volumes>")
    stray = [p for p in children if not p.is_dir()]
    if stray:
        raise UserError(f"{stray[0]}: file next to the class folders of {src}; only class subfolders belong there")
    entries: list[Entry] = []
    for cls_dir in classes:
        items = sorted(p for p in cls_dir.iterdir() if _visible(p))
        if not items:
            raise UserError(f"{cls_dir}: class folder is empty")
        for p in items:
            if kind == "nifti" and p.is_dir():
                raise UserError(f"{p}: folder inside NIfTI class folder {cls_dir.name}; expected image files")
            if kind == "dicom" and not p.is_dir():
                raise UserError(f"{p}: file inside DICOM class folder {cls_dir.name}; expected one subfolder per series")
            entries.append(Entry(p, cls_dir.name, None, None, None, str(cls_dir)))
    return entries


def class_names(labels: Sequence[str], where: str) -> list[str]:
    """Ordered class names. Integer labels must be exactly 0..K-1; names are sorted.
    A mix of integers and names, or a single class, is an error."""
    uniq = sorted(set(labels))
    is_int = [_is_int(u) for u in uniq]
    if any(is_int) and not all(is_int):
        num = next(u for u, i in zip(uniq, is_int) if i)
        name = next(u for u, i in zip(uniq, is_int) if not i)
        raise UserError(f"{where}: inconsistent labels, a mix of numbers and names ('{num}', '{name}')")
    if len(uniq) < 2:
        raise UserError(f"{where}: only one class ({uniq[0]!r}); a classifier needs at least two")
    if all(is_int):
        values = sorted({int(u) for u in uniq})
        if len(values) != len(uniq):
            raise UserError(f"{where}: inconsistent labels, the same number written two ways ({', '.join(uniq)})")
        expected = list(range(len(values)))
        if values != expected:
            missing = sorted(set(range(max(values) + 1)) - set(values))
            hint = f"missing {missing[0]}" if missing and values[0] >= 0 else f"found {values[0]}"
            raise UserError(f"{where}: integer labels must be 0..K-1 ({hint}); use names for other codes")
        return [str(v) for v in values]
    return uniq


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def label_index(label: str, names: list[str]) -> int:
    return names.index(str(int(label))) if _is_int(label) else names.index(label)


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[str]:
    """Seeded stratified split: per class (in class order), shuffle its items with
    `numpy.random.default_rng(seed)` and give round(f_val * n) to val, round(f_test * n) to test,
    the rest to train. Returns one split name per item, in input order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out = np.empty(len(labels), dtype=object)
    f_train, f_val, f_test = fractions
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = int(round(f_val * n))
        n_test = int(round(f_test * n))
        if n_val + n_test >= n:  # keep at least one training example per class
            n_test = max(0, min(n_test, n - 1 - n_val))
            n_val = max(0, min(n_val, n - 1))
        out[idx[:n_val]] = "val"
        out[idx[n_val : n_val + n_test]] = "test"
        out[idx[n_val + n_test :]] = "train"
    return [str(s) for s in out]
