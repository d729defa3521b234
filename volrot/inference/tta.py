"""Test-time augmentation on numpy arrays: averaging over the 24 exact cube rotations."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from volrot.errors import UserError
from volrot.inference.inputs import fmt_shape

TTA_MODES = ("none", "octahedral")


def rotate_grid(x: np.ndarray, rotation) -> np.ndarray:
    """Apply a cube-group element (`volrot.so3.sampling.GridRotation`) to the last three axes of
    a numpy array exactly; same convention as `volrot.so3.volume.rotate_exact` (np.rot90 and
    torch.rot90 both turn the first axis of the pair towards the second)."""
    for op in rotation.ops:
        if op[0] == "rot90":
            _, k, (a, b) = op
            x = np.rot90(x, k, axes=(a - 3, b - 3))
        elif op[0] == "flip":
            x = np.flip(x, axis=op[1] - 3)
        else:  # pragma: no cover - ops are built in volrot.so3.sampling
            raise ValueError(f"unknown voxel op {op!r}")
    return np.ascontiguousarray(x)


def tta_views(tta: str, input_shape: Sequence[int]) -> list:
    """The rotations averaged over: [] for `none`, the 24 cube rotations for `octahedral`."""
    if tta not in TTA_MODES:
        raise UserError(f"--tta must be one of {', '.join(TTA_MODES)}, got '{tta}'")
    if tta == "none":
        return []
    if len(set(input_shape[-3:])) != 1:
        raise UserError(f"--tta octahedral needs a cubic input; this model takes {fmt_shape(input_shape[-3:])}")
    from volrot.so3.sampling import octahedral

    return octahedral()
