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
from volrot.so3.sampling import octahedral
from volrot.so3.volume import rotate_exact

AUGMENTATIONS = ("none", "so3", "octahedral")


def random_rotation_matrices(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 3, 3) Haar-uniform rotations from normalised Gaussian quaternions (torch RNG)."""
    q = torch.randn(n, 4)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=1,
    ).reshape(n, 3, 3)
    return m.to(device)


def check_augment(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation '{name}' (choose from: {', '.join(AUGMENTATIONS)})")
    return name


def augment_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """Rotate each volume of a batch `(B, C, D, H, W)` according to `name`."""
    if name == "none":
        return x
    if name == "octahedral":
        group = octahedral()
        picks = torch.randint(len(group), (x.shape[0],)).tolist()
        return torch.stack([rotate_exact(v, group[k]) for v, k in zip(x, picks)])
    if name == "so3":
        from volrot.so3.volume import rotate

        return rotate(x, random_rotation_matrices(x.shape[0]).to(x.device, x.dtype))
    raise UserError(f"unknown augmentation '{name}'")
