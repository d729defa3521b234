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


def render_piece(
    cubes, size: int, rng: np.random.Generator, *, rotation=None, noise: bool = True, supersample: int = 16
) -> np.ndarray:
    """One smoothed, noisy volume (size³, float32, roughly in [0, 1]) of a polycube piece.

    `rotation` (3×3, default identity) renders the piece directly in the pose R about the grid
    centre (the convention of `volrot.so3.volume`: the piece drawn at p is drawn at R p): the
    same random draws (edge, shift, smoothing, intensity and the noise field) give the same
    piece in another pose, with no resampling. The noise is added after the pose, as for the
    canonical volumes, so a pose changes the piece and not the noise statistics. For the 48
    signed permutations (the cube group) the cubes stay axis-aligned and the partial volumes are
    exact; for any other R they are integrated exactly along x and with `supersample`² lines per
    voxel across (`_rotated_cube_occupancy`). `noise=False` leaves the noise out (same draws).
    """
    return _render(cubes, size, _draw_piece(rng, size), rotation=rotation, noise=noise, supersample=supersample)


def _draw_piece(rng: np.random.Generator, size: int) -> tuple:
    """The random draws of one volume, in the generator's order: edge, shift, smoothing sigma,
    intensity, noise field."""
    edge = rng.uniform(3.0, 4.0)  # cube edge in voxels
    shift = rng.uniform(-1.0, 1.0, size=3)
    sigma = rng.uniform(0.6, 1.0)
    scale = rng.uniform(0.7, 1.0)
    field = rng.normal(0.0, 0.05, size=(size, size, size))
    return edge, shift, sigma, scale, field


def _render(cubes, size: int, draws: tuple, *, rotation=None, noise: bool = True, supersample: int = 16) -> np.ndarray:
    edge, shift, sigma, scale, field = draws
    centres = np.asarray(cubes, dtype=np.float64)
    centres = (centres - centres.mean(0)) * edge
    c = (size - 1) / 2
    lo = np.arange(size) - 0.5 - c  # voxel i spans [lo, lo + 1] in centred coordinates
    vol = np.zeros((size, size, size))
    mat = None if rotation is None else np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    if mat is None or _is_signed_permutation(mat):
        placed = centres + shift if mat is None else (centres + shift) @ np.round(mat).T
        # Exact partial-volume rendering: the cubes are disjoint, and each one's overlap with a
        # voxel is the product of three 1D interval overlaps.
        for centre in placed:
            a = np.clip(np.minimum(lo[None] + 1, (centre + edge / 2)[:, None]) - np.maximum(lo[None], (centre - edge / 2)[:, None]), 0, None)
            vol += np.einsum("i,j,k->ijk", a[0], a[1], a[2])
    else:
        for centre in (centres + shift) @ mat.T:
            vol += _rotated_cube_occupancy(centre, edge, mat, size, supersample)
    vol = gaussian_filter(vol, sigma=sigma)
    vol = vol * scale + field if noise else vol * scale
    # Nothing outside the inscribed sphere: a rotation about the centre moves no content (piece
    # or noise) out of the grid or into it, and eval-rotated's sphere mask changes nothing.
    vol[~_inscribed_sphere(size)] = 0.0
    return vol.astype(np.float32)


def _is_signed_permutation(mat: np.ndarray) -> bool:
    r = np.round(mat)
    return bool(np.abs(mat - r).max() < 1e-9 and (np.abs(r).sum(0) == 1).all() and (np.abs(r).sum(1) == 1).all())


def _rotated_cube_occupancy(centre, edge: float, mat: np.ndarray, size: int, supersample: int) -> np.ndarray:
    """Fraction of each voxel (size³) covered by the cube {p : |Rᵀ(p − centre)|∞ ≤ edge/2}.

    Along x the covered interval of each line is exact (the cube is the intersection of three
    slabs); across, each voxel column is sampled by `supersample`² lines at the midpoints of a
    regular sub-grid. Only the columns within the cube's bounding sphere are computed.
    """
    c = (size - 1) / 2
    half = edge / 2
    reach = half * np.sqrt(3.0)
    s = int(supersample)
    out = np.zeros((size, size, size))
    lo_x = np.arange(size) - 0.5 - c
    ranges = []
    for axis in (1, 2):
        first = max(0, int(np.floor(centre[axis] - reach + c + 0.5)))
        last = min(size - 1, int(np.ceil(centre[axis] + reach + c - 0.5)))
        ranges.append(np.arange(first, last + 1))
    if any(len(r) == 0 for r in ranges):
        return out
    offsets = (np.arange(s) + 0.5) / s - 0.5  # sub-line positions inside a voxel
    ys = (ranges[0][:, None] - c + offsets[None]).reshape(-1)  # (Jy * s,)
    zs = (ranges[1][:, None] - c + offsets[None]).reshape(-1)
    y, z = np.meshgrid(ys - centre[1], zs - centre[2], indexing="ij")  # relative to the centre
    t0 = np.full(y.shape, -np.inf)
    t1 = np.full(y.shape, np.inf)
    for k in range(3):  # slab k: |a t + b| <= half with u_k = Σ_i R[i,k] (p_i − centre_i)
        a = mat[0, k]
        b = mat[1, k] * y + mat[2, k] * z
        if abs(a) < 1e-12:
            inside = np.abs(b) <= half
            t0 = np.where(inside, t0, np.inf)
            t1 = np.where(inside, t1, -np.inf)
            continue
        e0, e1 = (-half - b) / a, (half - b) / a
        t0 = np.maximum(t0, np.minimum(e0, e1))
        t1 = np.minimum(t1, np.maximum(e0, e1))
    t0, t1 = t0 + centre[0], t1 + centre[0]  # back to centred x coordinates
    cover = np.clip(np.minimum(lo_x + 1, t1[..., None]) - np.maximum(lo_x, t0[..., None]), 0, None)  # (Y, Z, X)
    ny, nz = len(ranges[0]), len(ranges[1])
    cover = cover.reshape(ny, s, nz, s, size).mean(axis=(1, 3))  # (ny, nz, X)
    out[:, ranges[0][0] : ranges[0][-1] + 1, ranges[1][0] : ranges[1][-1] + 1] = cover.transpose(2, 0, 1)
    return out


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
        n = split_size(split, cfg.max_samples)
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


class PoseRenderer:
    """Renders the volumes of one generated split again, each in any pose, with no resampling.

    `PoseRenderer(split, seed, size, n)` replays the generator of `generate_split(split, seed,
    size, n)` (the same labels and the same per-volume draws); `render(indices, matrix)` returns
    those volumes (len, 1, size, size, size) float32 rendered in the pose `matrix` (3×3). At the
    identity it reproduces `generate_split`'s volumes exactly; at a cube-group element it equals
    their exact voxel rotation (`rotate_exact`) up to the noise field, which is added after the
    pose (tests/test_rendered.py). Used by `volrot eval-rotated --protocol rendered`.
    """

    def __init__(self, split: str, seed: int = 0, size: int = 28, n: int | None = None, supersample: int = 16):
        if split not in SPLIT_SIZES:
            raise ValueError(f"unknown split {split!r}")
        n = SPLIT_SIZES[split] if n is None else n
        self.size, self.supersample = int(size), int(supersample)
        rng = np.random.default_rng([seed, _SPLIT_OFFSET[split], size])
        labels = np.arange(n) % len(CLASS_NAMES)
        self.labels = labels[rng.permutation(n)].astype(np.int64)
        self._states = []
        for _ in self.labels:  # remember where each volume's draws start
            self._states.append(rng.bit_generator.state)
            _draw_piece(rng, self.size)
        self.details = {"generator": "volrot.data.synthetic", "split": split, "seed": int(seed), "size": self.size,
                        "n": int(n), "supersample": self.supersample}  # fmt: skip

    def __len__(self) -> int:
        return len(self.labels)

    def render(self, indices, matrix=None, *, noise: bool = True) -> np.ndarray:
        out = []
        for i in indices:
            rng = np.random.default_rng()
            rng.bit_generator.state = self._states[int(i)]
            cubes = PIECES[CLASS_NAMES[int(self.labels[int(i)])]]
            draws = _draw_piece(rng, self.size)
            out.append(_render(cubes, self.size, draws, rotation=matrix, noise=noise, supersample=self.supersample))
        return np.stack(out)[:, None]


def split_size(split: str, max_samples: int | None) -> int:
    """How many volumes `load_shapes` generates for `split` under `data.max_samples`."""
    n = SPLIT_SIZES[split]
    return n if max_samples is None else max(1, min(n, int(max_samples)))


def pose_renderer(bundle: DataBundle, split: str) -> PoseRenderer:
    """The renderer of one split of a `load_shapes` bundle (its recorded seed and size, its
    count); `evaluate_rotated` checks it against the split's volumes."""
    if bundle.name != "shapes" or bundle.preprocessing.get("source") != "generated":
        raise ValueError(f"only the generated 'shapes' data can be rendered, not '{bundle.name}'")
    pre = bundle.preprocessing
    return PoseRenderer(split, seed=int(pre["seed"]), size=int(pre["size"]), n=len(bundle.split(split)))
