"""Where the tests find the real AdrenalMNIST3D files (one variable: VOLROT_MEDMNIST_ROOT).

`VOLROT_MEDMNIST_ROOT` names the folder holding `adrenalmnist3d.npz` (and `adrenalmnist3d_64.npz`).
Unset, the tests look in `shared/data/medmnist` beside the checkout (`../shared/data/medmnist`),
or beside the checkout's parent folder (a git worktree under `wt/`). Tests that need the files
skip with a message naming the variable and the folder looked in.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "VOLROT_MEDMNIST_ROOT"
_CHECKOUT = Path(__file__).resolve().parents[1]


def medmnist_root() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    candidates = [_CHECKOUT.parent / "shared" / "data" / "medmnist", _CHECKOUT.parent.parent / "shared" / "data" / "medmnist"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


MEDMNIST_ROOT = medmnist_root()
ADRENAL_NPZ = MEDMNIST_ROOT / "adrenalmnist3d.npz"
HAVE_ADRENAL = ADRENAL_NPZ.is_file()
SKIP_REASON = (
    f"real AdrenalMNIST3D not found: no {ADRENAL_NPZ}; set {ENV} to the folder holding adrenalmnist3d.npz"
)
