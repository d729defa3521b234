"""Training-time rotation augmentation, applied on the training device.

- `so3`: a Haar-uniform random rotation per volume (trilinear resampling about the grid centre,
  zeros outside). The augmented plain CNN is the baseline users pick instead of an equivariant
  model, so it uses exactly the rotation convention of `volrot.so3` (tensor axes (D,H,W)=(x,y,z),
  out(R p) = in(p)).
- `octahedral`: a uniformly drawn element of the 24 exact grid rotations per volume.

Random draws use torch's global generator, which the trainer seeds per epoch: runs are
reproducible and resumable.
"""

from __future__ import annotations

import torch

from volrot.errors import UserError
from volrot.so3.groups import cube_group
from volrot.so3.sampling import haar_matrices
from volrot.so3.volume import rotate_exact, rotate_trilinear_each

AUGMENTATIONS = ("none", "so3", "octahedral")


def _haar_batch(n: int) -> torch.Tensor:
    """(n, 3, 3) Haar-uniform rotations (`volrot.so3.sampling.haar_matrices`), seeded from torch's
    generator, so the trainer's per-epoch seeding governs them."""
    seed = int(torch.randint(0, 2**62, (1,)))
    return torch.from_numpy(haar_matrices(n, seed)).float()


def check_augment(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation '{name}' (choose from: {', '.join(AUGMENTATIONS)})")
    return name


def augment_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """Rotate each volume of a batch `(B, C, D, H, W)` according to `name`."""
    if name == "none":
        return x
    if name == "octahedral":
        group = cube_group("O")
        picks = torch.randint(len(group), (x.shape[0],)).tolist()
        return torch.stack([rotate_exact(v, group[k]) for v, k in zip(x, picks)])
    if name == "so3":
        return rotate_trilinear_each(x, _haar_batch(x.shape[0]))
    raise UserError(f"unknown augmentation '{name}'")
