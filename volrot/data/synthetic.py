"""`shapes`: the built-in, generated, rotation-sensitive dataset (works offline on first use).

Eight classes of polycube "tetris" pieces (the 3D tetris set of Weiler et al. 2018), including
a mirror-image pair (`chiral-left` / `chiral-right`): the classes differ only in 3D structure.
Each volume is 28³ (configurable through `data.size`): the piece, made of cubes of 3–4 voxels,
is centred on the grid with a small random sub-voxel shift and scale, smoothed, given a random
intensity and Gaussian noise. Every piece lies inside the inscribed sphere and the volume is
zero outside it, so rotating a volume about the grid centre never cuts it and never brings in
new content.

All volumes are in the **canonical orientation** (train, val and test). A plain CNN learns the
orientation together with the shape and visibly fails on rotated test volumes
(`volrot eval-rotated`), while a rotation-invariant model does not. Reflection-invariant models
(GMR-Conv, G-CNNs on Oh) cannot separate the chiral pair: at best 7/8 of the classes.

Generation is deterministic from `(seed, split)`: identical on every machine.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import gaussian_filter

from volrot.config import DataConfig
from volrot.data.base import ArrayDataset, DataBundle
from volrot.errors import UserError
from volrot.so3.volume import sphere_mask

# Cube positions of each piece (unit cubes); from the tetris experiment of 3D steerable CNNs.
PIECES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "chiral-left": ((0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0)),
    "chiral-right": ((0, 0, 0), (0, 0, 1), (1, 0, 0), (1, -1, 0)),
    "square": ((0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)),
    "line": ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)),
    "corner": ((0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)),
    "L": ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)),
    "T": ((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 1)),
    "zigzag": ((0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)),
}
CLASS_NAMES = list(PIECES)
SPLIT_SIZES = {"train": 1024, "val": 256, "test": 512}  # per split, balanced over the 8 classes
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


@functools.lru_cache(maxsize=4)
def _inscribed_sphere(size: int) -> np.ndarray:
    return sphere_mask((size, size, size)).numpy()


def render_piece(cubes, size: int, rng: np.random.Generator) -> np.ndarray:
    """One smoothed, noisy volume (size³, float32, roughly in [0, 1]) of a polycube piece."""
    edge = rng.uniform(3.0, 4.0)  # cube edge in voxels
    centres = np.asarray(cubes, dtype=np.float64)
    centres = (centres - centres.mean(0)) * edge
    shift = rng.uniform(-1.0, 1.0, size=3)
    c = (size - 1) / 2
    lo = np.arange(size) - 0.5 - c  # voxel i spans [lo, lo + 1] in centred coordinates
    vol = np.zeros((size, size, size))
    # Exact partial-volume rendering: the cubes are disjoint, and each one's overlap with a
    # voxel is the product of three 1D interval overlaps.
    for centre in centres + shift:
        a = np.clip(np.minimum(lo[None] + 1, (centre + edge / 2)[:, None]) - np.maximum(lo[None], (centre - edge / 2)[:, None]), 0, None)
        vol += np.einsum("i,j,k->ijk", a[0], a[1], a[2])
    vol = gaussian_filter(vol, sigma=rng.uniform(0.6, 1.0))
    vol = vol * rng.uniform(0.7, 1.0) + rng.normal(0.0, 0.05, size=vol.shape)
    # Nothing outside the inscribed sphere: a rotation about the centre moves no content (piece
    # or noise) out of the grid or into it, and eval-rotated's sphere mask changes nothing.
    vol[~_inscribed_sphere(size)] = 0.0
    return vol.astype(np.float32)


def generate_split(split: str, seed: int = 0, size: int = 28, n: int | None = None):
    """Images (N, 1, size, size, size) float32 and labels (N,) int64 for one split."""
    n = SPLIT_SIZES[split] if n is None else n
    rng = np.random.default_rng([seed, _SPLIT_OFFSET[split], size])
    labels = np.arange(n) % len(CLASS_NAMES)
    labels = labels[rng.permutation(n)]
    images = np.stack([render_piece(PIECES[CLASS_NAMES[k]], size, rng) for k in labels])
    return images[:, None], labels.astype(np.int64)


def load_shapes(cfg: DataConfig) -> DataBundle:
    size = int(cfg.size)
    if not 16 <= size <= 64:
        raise UserError(f"--data shapes: size must be between 16 and 64, got {size}")
    splits = {}
    for split in ("train", "val", "test"):
        n = SPLIT_SIZES[split]
        if cfg.max_samples is not None:
            n = max(1, min(n, int(cfg.max_samples)))
        images, labels = generate_split(split, seed=cfg.split_seed, size=size, n=n)
        splits[split] = ArrayDataset(images, labels)
    return DataBundle(
        name="shapes",
        class_names=CLASS_NAMES,
        in_channels=1,
        input_size=(size, size, size),
        task="multi-class",
        preprocessing={"source": "generated", "size": size, "seed": cfg.split_seed, "intensity": "none", "scale": 1.0, "offset": 0.0},
        info={"generator": "volrot.data.synthetic", "pieces": {k: [list(c) for c in v] for k, v in PIECES.items()}},
        **splits,
    )
