"""Plain 3D ResNets: the MedMNIST3D baselines.

`resnet3d` is the 3D ResNet-18 of the MedMNIST experiments (torchvision's ResNet-18 with a
3×3×3, stride-1 stem and no max-pool, every conv made 3D): blocks [2, 2, 2, 2], widths
64-128-256-512 (≈33M parameters). `width` scales all widths (`width=8` gives a tiny model for
tests); `depth=50` selects the bottleneck ResNet-50 layout [3, 4, 6, 3].

These models have no built-in rotation symmetry. Train them with `--augment so3` for the
augmented baseline.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from volrot.errors import UserError
from volrot.models.registry import register_model

_LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


class BasicBlock3d(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv3d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm3d(out_planes)
    )


class ResNet3d(nn.Module):
    def __init__(self, block: str, layers: tuple[int, ...], num_classes: int, in_channels: int, width: int):
        super().__init__()
        block_cls = BasicBlock3d if block == "basic" else Bottleneck3d
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True)
        )
        stages = []
        in_planes = width
        for i, (planes, n) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(in_planes, planes, stride))
                in_planes = planes * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model(
    "resnet3d",
    description="Plain 3D ResNet-18/34/50 (MedMNIST3D baseline); no built-in rotation symmetry",
)
def resnet3d(*, num_classes: int, in_channels: int = 1, width: int = 64, depth: int = 18) -> nn.Module:
    if depth not in _LAYOUTS:
        raise UserError(f"model.depth must be one of {sorted(_LAYOUTS)}, got {depth}")
    if int(width) < 1:
        raise UserError(f"model.width must be a positive integer, got {width}")
    block, layers = _LAYOUTS[depth]
    return ResNet3d(block, layers, num_classes, in_channels, int(width))
