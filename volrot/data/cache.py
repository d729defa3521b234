"""Cache of preprocessed volumes, so that epochs (and repeated loads) do not re-read DICOM.

Two levels, both keyed by (content hash of the source, `PreprocessSpec.key()`, centre, series):
- in memory, per process (a dict; worker processes each have their own);
- on disk, optional: `<cache_dir>/<content>-<spec>-<entry>.npy`, written atomically, so that a
  later run with the same files and the same preprocessing skips reading them at all.

The content hash is a BLAKE2b digest of the file bytes (for a DICOM series: of every file in
the series folder, in name order). It is computed once per process per file and memoised by
(path, size, mtime), so a second epoch or load costs a `stat` per file, not a read.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from volrot.data.preprocess import PreprocessSpec, preprocess_file

_MEMORY: dict[tuple, np.ndarray] = {}
_HASHES: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    if path.is_dir():
        parts = []
        for p in sorted(path.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                st = p.stat()
                parts.append((p.name, st.st_size, st.st_mtime_ns))
        return (str(path.resolve()), tuple(parts))
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def content_hash(path: str | Path) -> str:
    """BLAKE2b of a file's bytes, or of every (non-hidden) file of a folder in name order."""
    p = Path(path)
    key = _stat_key(p)
    if key in _HASHES:
        return _HASHES[key]
    h = hashlib.blake2b(digest_size=16)
    files = [x for x in sorted(p.iterdir()) if x.is_file() and not x.name.startswith(".")] if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    _HASHES[key] = digest
    return digest


def clear_memory_cache() -> None:
    _MEMORY.clear()
    _HASHES.clear()


def cached_preprocess(
    path: str | Path,
    spec: PreprocessSpec,
    center: Sequence[float] | None = None,
    series_uid: str | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """`preprocess_file` through the memory cache and, when `cache_dir` is set, the disk cache."""
    p = Path(path)
    entry = hashlib.blake2b(
        repr((None if center is None else [float(c) for c in center], series_uid)).encode(), digest_size=6
    ).hexdigest()
    key = (content_hash(p), spec.key(), entry)
    hit = _MEMORY.get(key)
    if hit is not None:
        return hit
    file = Path(cache_dir) / f"{key[0]}-{key[1]}-{key[2]}.npy" if cache_dir is not None else None
    array = None
    if file is not None and file.is_file():
        try:
            array = np.load(file, allow_pickle=False)
            if array.dtype != np.float32 or array.shape != (1, *spec.size):
                array = None
        except (OSError, ValueError, EOFError):
            warnings.warn(f"{file}: unreadable cache entry, recomputing", stacklevel=2)
            array = None
    if array is None:
        array = preprocess_file(p, spec, center=center, series_uid=series_uid)
        if file is not None:  # atomic: a full disk leaves neither a partial entry nor a temporary file
            from volrot.fileio import atomic_write

            def save(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    np.save(fh, array, allow_pickle=False)

            atomic_write(file, save)
    array.setflags(write=False)
    _MEMORY[key] = array
    return array
