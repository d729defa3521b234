"""Duplicate content across classes or splits: the commonest leakage bug with medical volumes.

Two volumes are the same content when their preprocessed voxels are identical (a hash of the
arrays the model sees) or, for DICOM, when they come from the same series (SeriesInstanceUID).
The same content under two labels, or in two splits (train and test...), makes the reported
metrics meaningless. `check_duplicates` refuses such data with one line naming the copies,
unless `data.allow_duplicates` is true, in which case it warns and the run's `data.json`
records the groups (`duplicates`).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np

from volrot.errors import UserError


def voxel_hash(array: np.ndarray) -> str:
    """Hash of a preprocessed volume's voxels (shape and float32 values)."""
    a = np.ascontiguousarray(array, dtype=np.float32)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def duplicate_groups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups of records sharing voxels or a SeriesInstanceUID that span more than one label or
    split. `records`: {path, label, split, voxel_hash, series_uid (or None)}. Each group:
    {members: [{path, label, split}], same: ["identical voxels" | "SeriesInstanceUID ..."]}."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    reasons: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        reasons.setdefault(("identical voxels", r["voxel_hash"]), []).append(i)
        if r.get("series_uid"):
            reasons.setdefault((f"SeriesInstanceUID {r['series_uid']}", r["series_uid"]), []).append(i)
    why: dict[int, set[str]] = {}
    for (what, _), idx in reasons.items():
        for j in idx[1:]:
            parent[find(j)] = find(idx[0])
        if len(idx) > 1:
            for j in idx:
                why.setdefault(j, set()).add(what)
    groups: dict[int, list[int]] = {}
    for i in range(len(records)):
        groups.setdefault(find(i), []).append(i)
    out = []
    for idx in groups.values():
        labels = {records[i]["label"] for i in idx}
        splits = {records[i]["split"] for i in idx}
        if len(idx) > 1 and (len(labels) > 1 or len(splits) > 1):
            out.append(
                {
                    "members": [{k: records[i][k] for k in ("path", "label", "split")} for i in idx],
                    "same": sorted(set().union(*(why.get(i, set()) for i in idx))),
                }
            )
    return out


def describe(group: dict[str, Any], show: int = 3) -> str:
    ms = group["members"]
    members = " = ".join(f"{m['path']} ({m['label']}, {m['split']})" for m in ms[:show])
    if len(ms) > show:
        members += f" = {len(ms) - show} more"
    return f"{members} [{', '.join(group['same'])}]"


def check_duplicates(records: list[dict[str, Any]], where: str, allow: bool = False) -> list[dict[str, Any]]:
    """Refuse (UserError) or, with `allow`, warn about content shared across classes or splits;
    returns the groups found."""
    groups = duplicate_groups(records)
    if not groups:
        return []
    n = sum(len(g["members"]) for g in groups)
    head = (
        f"{where}: {n} volumes in {len(groups)} group{'s' if len(groups) > 1 else ''} have the same content "
        f"under different labels or in different splits (leakage): {describe(groups[0])}"
    )
    if len(groups) > 1:
        head += f"; and {len(groups) - 1} more group{'s' if len(groups) > 2 else ''}"
    if not allow:
        raise UserError(head + "; remove the copies, or set data.allow_duplicates=true to train anyway")
    warnings.warn(head + " (data.allow_duplicates=true: training anyway; listed in data.json)", stacklevel=3)
    return groups
