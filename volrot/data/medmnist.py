"""MedMNIST3D (Organ, Nodule, Adrenal, Fracture, Vessel, Synapse) through the `medmnist` package.

Names: `organ|nodule|adrenal|fracture|vessel|synapse` or the flags `organmnist3d`...; sizes 28
and 64 (`data.size`); files `ROOT/<flag>.npz` (28) and `ROOT/<flag>_64.npz` (64) with `ROOT`
= `data.root` or medmnist's default `~/.medmnist`.

Missing file: no network access is attempted unless `data.download` is true
(`--set data.download=true`); the load fails at once with one line naming the file, the folder and the MD5
from `medmnist.INFO`. With `data.download`, medmnist's own `download()` runs (it needs
network access and torchvision) under a 30 s socket timeout; on failure nothing is left behind.

Present file: its MD5 is checked against `medmnist.INFO` (`MD5` / `MD5_64`); a mismatch is an
error, or a warning with `data.verify: false` (`--set data.verify=false`). The splits are then opened with
medmnist's dataset class (`medmnist.<python_class>(split, root=, size=, download=False)`),
and each split's size is checked against `INFO[flag]["n_samples"]`.

Items are float32 `(1, S, S, S)` in [0, 1] (uint8 / 255, what medmnist returns) with the
array axes as stored in the npz, taken as (x, y, z) for rotation math. medmnist's
`--shape_transform` (used in its Adrenal and Vessel experiments) is not applied.
"""

from __future__ import annotations

import hashlib
import socket
import warnings
import zipfile
from pathlib import Path

import numpy as np

from volrot.config import DataConfig
from volrot.data.base import ArrayDataset, DataBundle
from volrot.errors import UserError

SCALE = 1.0 / 255.0  # uint8 voxels -> [0, 1], in training and (recorded in the card) in predict

SHORT_NAMES = ("organ", "nodule", "adrenal", "fracture", "vessel", "synapse")
FLAGS = tuple(f"{n}mnist3d" for n in SHORT_NAMES)
SIZES = (28, 64)
DOWNLOAD_TIMEOUT_S = 30.0
_TASKS = {"binary-class": "binary", "multi-class": "multi-class"}
_MD5_MEMO: dict[tuple, str] = {}


def medmnist_flag(name: str) -> str | None:
    """'nodule' / 'NoduleMNIST3D' / 'nodulemnist3d' -> 'nodulemnist3d'; None if not MedMNIST3D."""
    low = name.strip().lower()
    if low in SHORT_NAMES:
        return f"{low}mnist3d"
    return low if low in FLAGS else None


def npz_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def file_md5(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_MEMO:
        h = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _MD5_MEMO[key] = h.hexdigest()
    return _MD5_MEMO[key]


def _info(flag: str) -> dict:
    from medmnist import INFO

    return INFO[flag]


def default_root() -> Path:
    from medmnist.info import DEFAULT_ROOT

    return Path(DEFAULT_ROOT)


def _place_hint(file: Path, info: dict, size: int) -> str:
    suffix = "" if size == 28 else f"_{size}"
    return f"place {file.name} in {file.parent} (MD5 {info['MD5' + suffix]}; from {info['url' + suffix]})"


def _missing_message(file: Path, info: dict, size: int) -> str:
    return f"{file.name} not found: {_place_hint(file, info, size)}, or pass --download (data.download=true) when online"


def _download(cls, file: Path, info: dict, size: int) -> None:
    created = not file.parent.exists()
    file.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        cls(split="train", root=str(file.parent), size=size, download=True)
    except Exception:
        if file.exists():
            file.unlink()  # a partial or corrupt download must not look like a dataset
        if created and not any(file.parent.iterdir()):
            file.parent.rmdir()
        raise UserError(
            f"download of {file.name} failed (needs network access and torchvision): "
            f"{_place_hint(file, info, size)}"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _verify(file: Path, info: dict, size: int, verify: bool) -> tuple[str, str, bool]:
    expected = info["MD5" if size == 28 else f"MD5_{size}"]
    got = file_md5(file)
    if got == expected:
        return got, expected, True
    msg = (
        f"{file}: MD5 {got} differs from medmnist's {expected} (corrupt, truncated or another "
        "release of the file)"
    )
    if verify:
        raise UserError(msg + "; replace it, or pass --no-verify (data.verify=false) to use it anyway")
    warnings.warn(msg + "; using it anyway (data.verify=false)", stacklevel=3)
    return got, expected, False


def _open_split(cls, flag: str, split: str, file: Path, size: int, info: dict):
    try:
        ds = cls(split=split, root=str(file.parent), size=size, download=False)
        images, labels = np.asarray(ds.imgs), np.asarray(ds.labels)
    except KeyError as e:
        raise UserError(f"{file}: not a MedMNIST file, array {e} is missing") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        detail = " ".join(str(e).split())[:120] or type(e).__name__
        raise UserError(f"{file}: truncated or corrupt npz ({detail})") from None
    n_expected = info["n_samples"][split]
    if images.ndim != 4 or images.shape[1:] != (size, size, size):
        raise UserError(f"{file}: {split}_images has shape {images.shape}, expected (N, {size}, {size}, {size})")
    if len(images) != n_expected or len(labels) != n_expected:
        raise UserError(
            f"{file}: {split} split holds {len(images)} volumes and {len(labels)} labels, "
            f"medmnist INFO says {n_expected} (wrong file or release)"
        )
    n_classes = len(info["label"])
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1 or labels.min() < 0 or labels.max() >= n_classes:
        raise UserError(f"{file}: {split}_labels are not single labels in 0..{n_classes - 1}")
    return images, labels[:, 0]


def load_medmnist(cfg: DataConfig) -> DataBundle:
    flag = medmnist_flag(cfg.name)
    if flag is None:
        raise UserError(f"unknown MedMNIST3D dataset '{cfg.name}' (known: {', '.join(SHORT_NAMES)})")
    if cfg.preprocess:
        raise UserError(
            f"data.preprocess ({', '.join(sorted(cfg.preprocess))}) applies to nifti:/dicom: data only; "
            "MedMNIST3D volumes come preprocessed"
        )
    if cfg.size not in SIZES:
        raise UserError(f"--size {cfg.size}: MedMNIST3D comes in sizes 28 and 64")
    import medmnist

    info = _info(flag)
    cls = getattr(medmnist, info["python_class"])
    root = Path(cfg.root).expanduser() if cfg.root else default_root()
    file = root / npz_name(flag, cfg.size)
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root}: is a file, not a folder")
    if not file.is_file():
        if not cfg.download:
            raise UserError(_missing_message(file, info, cfg.size))
        _download(cls, file, info, cfg.size)
    md5, expected, verified = _verify(file, info, cfg.size, cfg.verify)

    splits = {}
    for split in ("train", "val", "test"):
        images, labels = _open_split(cls, flag, split, file, cfg.size, info)
        if cfg.max_samples is not None:
            images, labels = images[: cfg.max_samples], labels[: cfg.max_samples]
        splits[split] = ArrayDataset(images, labels, scale=SCALE)

    names = [info["label"][k] for k in sorted(info["label"], key=int)]
    return DataBundle(
        name=flag,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        class_names=names,
        in_channels=int(info["n_channels"]),
        input_size=(cfg.size, cfg.size, cfg.size),
        task=_TASKS[info["task"]],
        preprocessing={
            "source": "medmnist",
            "flag": flag,
            "size": cfg.size,
            "intensity": "uint8 / 255 -> [0, 1]",
            "scale": SCALE,  # executable: predict maps file voxels by value * scale + offset
            "offset": 0.0,
            "shape_transform": False,
        },
        info={
            "python_class": info["python_class"],
            "file": str(file),
            "md5": md5,
            "md5_expected": expected,
            "md5_verified": verified,
            "n_samples": dict(info["n_samples"]),
            "max_samples": cfg.max_samples,
            "license": info.get("license"),
        },
    )
