"""Sets of rotations: the octahedral group (exact on the voxel grid), axis sweeps, SO(3) grids.

Axis convention: spatial tensor axes (D, H, W) = (x, y, z); a rotation matrix R acts on
centred voxel coordinates, and rotating a volume by R means out(R p) = in(p).

`torch.rot90(x, 1, dims=(a, b))` sends axis a onto axis b, i.e. it is the +90° rotation in the
(a, b) plane: dims (x, y) is Rz(+90°), (y, z) is Rx(+90°), (z, x) is Ry(+90°).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# One voxel operation: ("rot90", k, (axis_a, axis_b)) or ("flip", axis); axes index (x, y, z).
VoxelOp = tuple

_GENERATORS: tuple[tuple[np.ndarray, VoxelOp], ...] = (
    (np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]), ("rot90", 1, (0, 1))),  # Rz(+90)
    (np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]), ("rot90", 1, (1, 2))),  # Rx(+90)
)
_REFLECTION: tuple[np.ndarray, VoxelOp] = (np.diag([-1, 1, 1]), ("flip", 0))


@dataclass(frozen=True)
class GridRotation:
    """An element of the cube group with its exact voxel operation.

    `matrix` is an integer 3×3 orthogonal matrix; `ops` are voxel operations applied left to
    right (so `matrix` is the product of their matrices right to left). `is_rotation` is False
    for the 24 improper elements (reflections are not rotations).
    """

    index: int
    matrix: np.ndarray
    ops: tuple[VoxelOp, ...]

    @property
    def is_rotation(self) -> bool:
        return bool(round(np.linalg.det(self.matrix)) == 1)

    @property
    def angle_deg(self) -> float:
        """Rotation angle (proper part) in degrees."""
        m = self.matrix * round(np.linalg.det(self.matrix))
        return float(np.degrees(np.arccos(np.clip((np.trace(m) - 1) / 2, -1.0, 1.0))))


def _closure(generators) -> list[tuple[np.ndarray, tuple[VoxelOp, ...]]]:
    """Breadth-first closure, so that each element gets a shortest op word (identity first)."""
    identity = np.eye(3, dtype=np.int64)
    found = {identity.tobytes(): (identity, ())}
    frontier = [(identity, ())]
    while frontier:
        nxt = []
        for mat, word in frontier:
            for gmat, gop in generators:
                new = gmat.astype(np.int64) @ mat  # apply `word`, then the generator
                key = new.tobytes()
                if key not in found:
                    found[key] = (new, word + (gop,))
                    nxt.append(found[key])
        frontier = nxt
    return list(found.values())


def octahedral(reflections: bool = False) -> list[GridRotation]:
    """The 24 rotations of the cube (identity first), or all 48 elements with `reflections=True`.

    Each element carries its exact voxel operation (rot90 / flip compositions): applying it to a
    cubic volume involves no interpolation.
    """
    gens = _GENERATORS + ((_REFLECTION,) if reflections else ())
    elements = _closure(gens)
    # Proper rotations first (stable order), then improper ones.
    elements.sort(key=lambda e: (round(np.linalg.det(e[0])) != 1,))
    return [GridRotation(i, m, w) for i, (m, w) in enumerate(elements)]
