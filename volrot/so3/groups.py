"""The cube group and its subgroups: the symmetries that are exact on a cubic voxel grid.

Every element is a signed permutation matrix (an integer orthogonal 3×3 matrix) with a word of
voxel operations (`rot90` / `flip`) that applies it to a volume with no interpolation
(`rotate_exact`, for torch tensors and numpy arrays alike). Axis convention: spatial tensor axes (D, H, W) = (x, y, z);
rotating a volume by g means out(g p) = in(p) about the grid centre.

`torch.rot90(x, 1, dims=(a, b))` sends axis a onto axis b, i.e. it is the +90° rotation in the
(a, b) plane: dims (x, y) is Rz(+90°), (y, z) is Rx(+90°), (z, x) is Ry(+90°).

==== ===== ===========================================================================
name order elements
==== ===== ===========================================================================
C1   1     the identity (a model with no built-in symmetry)
O    24    the rotations of the cube
Oh   48    O and the reflections (O × {±I}); half of them are improper (det −1)
D4   8     rotations that keep the z axis (last spatial axis) up to sign
D4h  16    D4 and the reflections that keep the z axis up to sign (D4 × {±I})
==== ===== ===========================================================================

A `CubeGroup` holds its elements (identity first, each with its index *in that group*), the
Cayley table (`cayley[i, j]` = index of h_i h_j), the inverse table and a lookup by matrix.
`Symmetry` is what a model declares: the cube subgroup its logits are exactly invariant to, and
whether it is also (approximately, through interpolation) invariant to every rotation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

# One voxel operation: ("rot90", k, (axis_a, axis_b)) or ("flip", axis); axes index (x, y, z).
VoxelOp = tuple

_GENERATORS: tuple[tuple[np.ndarray, VoxelOp], ...] = (
    (np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]), ("rot90", 1, (0, 1))),  # Rz(+90)
    (np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]), ("rot90", 1, (1, 2))),  # Rx(+90)
)
_REFLECTION: tuple[np.ndarray, VoxelOp] = (np.diag([-1, 1, 1]), ("flip", 0))


def _key(matrix) -> bytes:
    return np.rint(np.asarray(matrix, dtype=np.float64)).astype(np.int64).tobytes()


@dataclass(frozen=True, eq=False)
class CubeElement:
    """An element of the cube group (a rotation or, when `is_rotation` is False, an improper
    element: a reflection or rotoreflection) with its exact voxel operation.

    `matrix` is an integer 3×3 orthogonal matrix; `ops` are voxel operations applied left to
    right (so `matrix` is the product of their matrices right to left); `index` is the
    element's position in the group it was taken from.
    """

    index: int
    matrix: np.ndarray
    ops: tuple[VoxelOp, ...]

    @property
    def is_rotation(self) -> bool:
        return bool(round(np.linalg.det(self.matrix)) == 1)

    @property
    def angle_deg(self) -> float:
        """Rotation angle of the proper part (matrix · det) in degrees, in [0, 180]."""
        proper = self.matrix * round(np.linalg.det(self.matrix))
        return float(np.degrees(Rotation.from_matrix(proper.astype(np.float64)).magnitude()))


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


@dataclass(frozen=True, eq=False)
class CubeGroup:
    """A subgroup of the cube group with its multiplication table.

    `elements[i]` is h_i (identity first, `h_i.index == i`); `cayley[i, j]` = index of h_i h_j;
    `inverse[i]` = index of h_i⁻¹.
    """

    name: str
    elements: tuple[CubeElement, ...]
    cayley: np.ndarray
    inverse: np.ndarray

    @property
    def order(self) -> int:
        return len(self.elements)

    @property
    def has_reflections(self) -> bool:
        return not all(g.is_rotation for g in self.elements)

    @property
    def matrices(self) -> np.ndarray:
        """(N, 3, 3) float64 matrices in element order."""
        return np.stack([g.matrix.astype(np.float64) for g in self.elements])

    def __len__(self) -> int:
        return len(self.elements)

    def __iter__(self):
        return iter(self.elements)

    def __getitem__(self, i):
        return self.elements[i]

    @functools.cached_property
    def _lookup(self) -> dict[bytes, int]:
        return {_key(g.matrix): g.index for g in self.elements}

    def index(self, g) -> int:
        """Index of the element with the matrix of `g` (a `CubeElement` or a 3×3 matrix);
        `KeyError` when it is not in this group."""
        matrix = g.matrix if isinstance(g, CubeElement) else g
        try:
            return self._lookup[_key(matrix)]
        except KeyError:
            raise KeyError(f"the element is not in the group {self.name}") from None

    def __contains__(self, g) -> bool:
        matrix = g.matrix if isinstance(g, CubeElement) else g
        return _key(matrix) in self._lookup

    def element(self, g) -> CubeElement:
        """This group's element with the matrix of `g`."""
        return self.elements[self.index(g)]

    def inverse_of(self, g) -> CubeElement:
        return self.elements[int(self.inverse[self.index(g)])]

    def outside(self, other: "CubeGroup") -> list[CubeElement]:
        """The elements of `other` that are not in this group (the negative controls)."""
        return [g for g in other if g not in self]


def _make_group(name: str, elements: list[tuple[np.ndarray, tuple[VoxelOp, ...]]]) -> CubeGroup:
    elems = tuple(CubeElement(i, m, w) for i, (m, w) in enumerate(elements))
    lookup = {_key(g.matrix): g.index for g in elems}
    n = len(elems)
    cayley = np.empty((n, n), dtype=np.int64)
    for a in elems:
        for b in elems:
            cayley[a.index, b.index] = lookup[_key(a.matrix @ b.matrix)]
    inverse = np.argmax(cayley == 0, axis=1)  # the identity is element 0
    return CubeGroup(name, elems, cayley, inverse)


#: group name -> (with reflections, keeps the z axis only, identity only)
_SUBGROUPS: dict[str, tuple[bool, bool, bool]] = {
    "C1": (False, False, True),
    "O": (False, False, False),
    "Oh": (True, False, False),
    "D4": (False, True, False),
    "D4h": (True, True, False),
}
GROUP_NAMES = tuple(_SUBGROUPS)


@functools.lru_cache(maxsize=None)
def cube_group(name: str) -> CubeGroup:
    """The cube subgroup `name` (one of `GROUP_NAMES`), built once. Element order: proper
    rotations first (breadth-first from the generators), then the improper ones."""
    if name not in _SUBGROUPS:
        raise ValueError(f"unknown cube group {name!r} (one of {', '.join(GROUP_NAMES)})")
    reflections, keeps_z, trivial = _SUBGROUPS[name]
    gens = _GENERATORS + ((_REFLECTION,) if reflections else ())
    found = _closure(gens)
    found.sort(key=lambda e: (round(np.linalg.det(e[0])) != 1,))  # stable: proper ones first
    if keeps_z:
        found = [e for e in found if abs(e[0][2, 2]) == 1]
    if trivial:
        found = found[:1]
    return _make_group(name, found)


def rotate_exact(x, rotation: CubeElement):
    """Apply a cube-group element to the last three axes of `x` exactly (no interpolation).

    `x` is a torch tensor or a numpy array: the same op words either way (`torch.rot90` and
    `np.rot90` both turn the first axis of the pair towards the second). A numpy result is made
    contiguous. This module does not import torch (tensors are handled through their methods), so
    the ONNX inference path can rotate arrays without it. Also importable from
    `volrot.so3.volume`.
    """
    numpy = isinstance(x, np.ndarray)
    for op in rotation.ops:
        if op[0] == "rot90":
            _, k, (a, b) = op
            x = np.rot90(x, k, axes=(a - 3, b - 3)) if numpy else x.rot90(k, (a - 3, b - 3))
        elif op[0] == "flip":
            x = np.flip(x, axis=op[1] - 3) if numpy else x.flip((op[1] - 3,))
        else:  # pragma: no cover - ops are built here
            raise ValueError(f"unknown voxel op {op!r}")
    return np.ascontiguousarray(x) if numpy else x


def octahedral(reflections: bool = False) -> list[CubeElement]:
    """The 24 rotations of the cube (identity first), or all 48 elements with `reflections=True`."""
    return list(cube_group("Oh" if reflections else "O").elements)


# --------------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Symmetry:
    """The symmetry a model has by construction (declared by its architecture, per options).

    `name`: what it is invariant to, e.g. ``SO(3)``, ``O(3)``, ``O``, ``D4``, ``none``.
    `group`: the cube subgroup under which the logits are exactly invariant on a cubic grid
    (up to float rounding; `volrot.so3.check` tests it). `continuous`: True when the model is
    built for every rotation (steerable, EquiLoPO); off the grid it is then invariant only up to
    the interpolation and discretisation error.
    """

    name: str
    group: CubeGroup
    continuous: bool = False

    @property
    def trivial(self) -> bool:
        return self.group.order == 1

    def describe(self) -> str:
        if self.trivial:
            return "none"
        return f"{self.name} (exact: {self.group.name}, {self.group.order} grid elements)"


NO_SYMMETRY = Symmetry("none", cube_group("C1"))
