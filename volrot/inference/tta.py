"""Test-time augmentation on numpy arrays: averaging over the 24 exact cube rotations
(applied with `volrot.so3.groups.rotate_exact`, which takes numpy arrays without torch)."""

from __future__ import annotations

from typing import Sequence


from volrot.errors import UserError
from volrot.inference.inputs import fmt_shape
from volrot.so3.groups import octahedral

TTA_MODES = ("none", "octahedral")


def tta_views(tta: str, input_shape: Sequence[int]) -> list:
    """The rotations averaged over: [] for `none`, the 24 cube rotations for `octahedral`."""
    if tta not in TTA_MODES:
        raise UserError(f"--tta must be one of {', '.join(TTA_MODES)}, got '{tta}'")
    if tta == "none":
        return []
    if len(set(input_shape[-3:])) != 1:
        raise UserError(f"--tta octahedral needs a cubic input; this model takes {fmt_shape(input_shape[-3:])}")
    return octahedral()
