"""`gcnn`: regular 3D group-convolution CNN on a cube subgroup (Winkels & Cohen 2018).

Groups (all exact on the voxel grid; `volrot.so3.groups.cube_group`, with their Cayley and
inverse tables): O (24 rotations of the cube, default), Oh (48: O and the reflections), D4 (8
rotations that keep the z axis up to sign), D4h (16: D4 and its reflections). The model
declares that group as its symmetry, and its convolutions and batch norms as regular fields of
it (`equivariant_layers`).

Conventions (see `volrot.so3`): spatial axes (D, H, W) = (x, y, z); rotating a volume by g means
out(g p) = in(p). A G-feature map is a tensor (B, C·N, D, H, W) with channel index c·N + i
(orientation i minor), i.e. a function f(x, h_i) per G-channel c. The group acts by
[L_r f](x, h) = f(r⁻¹x, r⁻¹h): `rotate_exact` on space and new orientation index i holding the
old index of r⁻¹h_i.

Layers (both are ONE `conv3d` on a filter bank gathered with indices precomputed at build time):

- lifting: out(x, g) = Σ_y f(y) ψ(g⁻¹(y − x)); the filter for orientation g is ψ rotated by g;
- group conv: out(x, g) = Σ_{h,y} f(y, h) W(g⁻¹(y − x), g⁻¹h); the filter for orientation g is
  W rotated by g in space with its input-orientation axis permuted by the Cayley table.

Kernel sizes must be odd (the rotation centre is then a voxel). Batch norm statistics and affine
parameters are shared over the orientation axis; convolutions have no bias (BN follows).
Downsampling is `symmetric_downsample` (2×2×2 average pooling on even sizes, 3×3×3 stride 2
padding 1 on odd sizes), so any cubic input size keeps the symmetry; 28³ runs 28 -> 14 -> 7 -> 4.
The head averages over space, takes the max over the orientation axis and applies a linear
layer: the logits are invariant to the chosen group (only to it: a D4 model is not invariant
to all 24 rotations).

Macro-architecture (Winkels & Cohen's 6-layer CNN): layer widths
[w, w, 2w, 2w, 4w, 4w] of a plain CNN with base width `width`, each conv followed by BN and
ReLU, downsampling after layers 1, 3 and 5, then group/space pooling and a linear layer.
Each plain width is turned into G-channels (each G-channel is N 3D channels) by `width_mode`:

- `params`: G-channels = round(width / √N): about the plain CNN's parameter count
  (layers ≥ 2), about N× its compute and √N× its activation memory;
- `compute`: G-channels = round(width / N): about the plain CNN's 3D channels and FLOPs and
  about 1/N of its parameters. For O (24) and Oh (48) this needs width ≥ N to be meaningful
  (G-channels never drop below 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from volrot.errors import UserError
from volrot.models.registry import register_model
from volrot.models.symmetric_pool import symmetric_downsample
from volrot.so3.fields import Regular
from volrot.so3.groups import CubeGroup, Symmetry, cube_group
from volrot.so3.volume import rotate_exact

GROUPS = ("O", "Oh", "D4", "D4h")
WIDTH_MODES = ("params", "compute")


def cube_subgroup(name: str) -> CubeGroup:
    """The group `name` (one of `GROUPS`); a `UserError` for any other name."""
    if name not in GROUPS:
        raise UserError(f"model.group must be one of {', '.join(GROUPS)}, got {name!r}")
    return cube_group(name)


def spatial_gather_index(group: CubeGroup, kernel_size: int) -> torch.Tensor:
    """(N, k³) indices: row g holds, for each offset u (flattened), the flat index of g⁻¹u.

    So `w.flatten(-3)[..., idx[g]]` is the kernel rotated by g: (T_g w)(u) = w(g⁻¹u).
    """
    k = kernel_size
    ar = torch.arange(k**3).view(k, k, k)
    return torch.stack([rotate_exact(ar, g).reshape(-1) for g in group.elements])


def _he_normal_(weight: torch.Tensor, fan_in: int) -> None:
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(2.0 / fan_in))


class LiftingConv3d(nn.Module):
    """Z³ -> G convolution: (B, C_in, D, H, W) -> (B, C_out·N, D, H, W), stride 1, same padding."""

    def __init__(self, in_channels: int, out_channels: int, group: CubeGroup, kernel_size: int = 3):
        super().__init__()
        _check_kernel_size(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.order = group.order
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size**3))
        _he_normal_(self.weight, in_channels * kernel_size**3)
        self.register_buffer("gather", spatial_gather_index(group, kernel_size), persistent=False)

    def filter_bank(self) -> torch.Tensor:
        k, n = self.kernel_size, self.order
        bank = self.weight[:, :, self.gather]  # (C_out, C_in, N, k³)
        return bank.permute(0, 2, 1, 3).reshape(self.out_channels * n, self.in_channels, k, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.filter_bank(), padding=self.kernel_size // 2)


class GroupConv3d(nn.Module):
    """G -> G convolution: (B, C_in·N, D, H, W) -> (B, C_out·N, D, H, W), stride 1, same padding."""

    def __init__(self, in_channels: int, out_channels: int, group: CubeGroup, kernel_size: int = 3):
        super().__init__()
        _check_kernel_size(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        n, k3 = group.order, kernel_size**3
        self.order = n
        # weight[c_out, c_in, h·k³ + u] = W_{c_out, c_in}(u, h)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, n * k3))
        _he_normal_(self.weight, in_channels * n * k3)
        spatial = spatial_gather_index(group, kernel_size)  # (N, k³): index of g⁻¹u
        # orient[g, h] = index of g⁻¹h
        orient = torch.from_numpy(group.cayley[group.inverse])
        gather = orient[:, :, None] * k3 + spatial[:, None, :]  # (N_g, N_h, k³)
        self.register_buffer("gather", gather, persistent=False)

    def filter_bank(self) -> torch.Tensor:
        k, n = self.kernel_size, self.order
        bank = self.weight[:, :, self.gather]  # (C_out, C_in, N_g, N_h, k³)
        bank = bank.permute(0, 2, 1, 3, 4)  # (C_out, N_g, C_in, N_h, k³)
        return bank.reshape(self.out_channels * n, self.in_channels * n, k, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.filter_bank(), padding=self.kernel_size // 2)


class GroupBatchNorm3d(nn.Module):
    """Batch norm of G-feature maps with statistics and affine parameters shared over orientations."""

    def __init__(self, channels: int, order: int):
        super().__init__()
        self.channels, self.order = channels, order
        self.bn = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[-3:]  # batch left as -1 so exported graphs keep a dynamic batch axis
        y = self.bn(x.reshape(-1, self.channels, self.order * d, h, w))
        return y.reshape(-1, self.channels * self.order, d, h, w)


def group_channels(plain_width: int, order: int, width_mode: str) -> int:
    """G-channels that stand in for `plain_width` channels of a plain CNN (see module doc)."""
    divisor = math.sqrt(order) if width_mode == "params" else order
    return max(1, int(round(plain_width / divisor)))


class GCNN3d(nn.Module):
    """Lifting + 5 group convs (Winkels & Cohen layout), group-max/space-mean pooled head."""

    #: plain-CNN width multipliers per layer, and whether to downsample after the layer
    LAYOUT = ((1, True), (1, False), (2, True), (2, False), (4, True), (4, False))

    def __init__(
        self,
        group: CubeGroup,
        num_classes: int,
        in_channels: int,
        width: int,
        width_mode: str,
        kernel_size: int,
    ):
        super().__init__()
        self.group = group
        n = group.order
        chans = [group_channels(width * mult, n, width_mode) for mult, _ in self.LAYOUT]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.downsample_after = [down for _, down in self.LAYOUT]
        prev = in_channels
        for i, c in enumerate(chans):
            conv_cls = LiftingConv3d if i == 0 else GroupConv3d
            self.convs.append(conv_cls(prev, c, group, kernel_size))
            self.norms.append(GroupBatchNorm3d(c, n))
            prev = c
        self.out_channels = prev
        self.fc = nn.Linear(prev, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last G-feature map (B, C·N, D', H', W')."""
        for conv, norm, down in zip(self.convs, self.norms, self.downsample_after):
            x = F.relu(norm(conv(x)))
            if down:
                x = symmetric_downsample(x)
        return x

    def equivariant_layers(self) -> list:
        """The lifting/group convs and their batch norms: regular fields of the group."""
        field = Regular(self.group)
        return [
            (name, m, field)
            for name, m in self.named_modules()
            if isinstance(m, (LiftingConv3d, GroupConv3d, GroupBatchNorm3d))
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        f = f.reshape(-1, self.out_channels, self.group.order, f.shape[-3] * f.shape[-2] * f.shape[-1])
        pooled = f.mean(dim=3).amax(dim=2)  # space mean, then max over the orientation axis
        return self.fc(pooled)


def _check_kernel_size(k: int) -> None:
    if int(k) < 1 or int(k) % 2 == 0:
        raise UserError(f"model.kernel_size must be a positive odd integer (exact voxel rotations), got {k}")


@register_model(
    "gcnn",
    description="Regular 3D group-conv CNN (Winkels & Cohen) on O/Oh/D4/D4h; invariant to its group",
    symmetry=lambda group="O", **_: Symmetry(str(group), cube_subgroup(str(group))),
)
def gcnn(
    *,
    num_classes: int,
    in_channels: int = 1,
    group: str = "O",
    width: int = 16,
    width_mode: str = "params",
    kernel_size: int = 3,
) -> nn.Module:
    """Options: `group` O|Oh|D4|D4h; `width` base width of the plain CNN it stands in for;
    `width_mode` params (G-channels = width/√N) | compute (width/N); odd `kernel_size`."""
    if width_mode not in WIDTH_MODES:
        raise UserError(f"model.width_mode must be one of {', '.join(WIDTH_MODES)}, got {width_mode!r}")
    if int(width) < 1:
        raise UserError(f"model.width must be a positive integer, got {width}")
    _check_kernel_size(kernel_size)
    return GCNN3d(cube_subgroup(str(group)), num_classes, in_channels, int(width), width_mode, int(kernel_size))
