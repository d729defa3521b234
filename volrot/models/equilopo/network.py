"""EquiLoPO ResNets (`ELPOResNet18` and its 2- and 1-block versions) on SO(3)-function features.

Layout (docs/equilopo-math.md §2.1), `C = channels` everywhere, L = `lmax`, L_f = `filter_lmax`:

* input `(B, C_in, D, H, W)` -> `(B, C_in, 1, D, H, W)` (degree 0: constant on SO(3));
* init block: lift conv 0 -> L+1 · BN · act · conv -> L · BN · act;
* stages of basic blocks (blocks 8: [2, 2, 2, 2], 2: [1, 1], 1: [1]); the first block of every
  stage after the first halves the volume (`SymmetricAvgPool`) after its first activation;
* basic block: conv -> L · BN · dropout · act · [pool] · conv -> L · BN · + shortcut (block input
  truncated to degree L, pooled if needed) · dropout · act;
* head (`head: softmax`, the paper's): SO(3) SoftMax per (channel, voxel) -> spatial mean ->
  Linear(C, classes). `spectrum` and `gram` hand the classifier more invariants per channel
  (`EquiLoPONet.invariants`); `head_norm` standardises the pooled invariants first
  (BatchNorm1d); `lift_lmax` sets the lifting conv's output degree (paper: L + 1);
  `init_pool` halves the volume after the init block (the blocks then run at half size).

With ``activation: local`` every activation doubles the degree (L -> 2L); with ``global`` the
sigmoid-gate activation keeps it. For a 28³ input the 8-block model runs at 28, 14, 7 and 4
voxels (the authors' 7 -> 3 pooling is not symmetric). Any input size works; the logits are
exactly invariant under the 24 rotations of a cubic input grid.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from volrot.models.equilopo.activation import GlobalActivation, LocalActivation, SO3SoftMax, as_full_precision, full_precision
from volrot.models.equilopo.conv import SO3Conv
from volrot.models.equilopo.invariants import gram_size, power_spectrum, row_gram
from volrot.models.equilopo.layers import SE3BatchNorm, SE3Dropout, SymmetricAvgPool
from volrot.so3.fields import Scalar, SO3Fourier
from volrot.so3.wigner import n_coeffs

STAGES = {8: (2, 2, 2, 2), 2: (1, 1), 1: (1,)}
HEADS = ("softmax", "spectrum", "gram")


class _Act(nn.Module):
    """Local or global activation with a known output degree `lout`."""

    def __init__(self, kind: str, channels: int, lmax: int, coefficients: str, keep: int | None = None):
        super().__init__()
        if kind == "local":
            self.op = LocalActivation(lmax, coefficients, keep=keep)
        else:
            self.op = GlobalActivation(channels, lmax, coefficients)
        self.lout = self.op.keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class BasicBlock(nn.Module):
    def __init__(self, channels: int, lin: int, lmax: int, filter_lmax: int, kind: str, coefficients: str, dropout: float, downsample: bool):
        super().__init__()
        self.lmax = lmax
        self.conv1 = SO3Conv(channels, channels, lin, lmax, filter_lmax)
        self.bn1 = SE3BatchNorm(channels, lmax)
        self.drop1 = SE3Dropout(dropout)
        self.act1 = _Act(kind, channels, lmax, coefficients)
        self.pool = SymmetricAvgPool() if downsample else nn.Identity()
        self.conv2 = SO3Conv(channels, channels, self.act1.lout, lmax, filter_lmax)
        self.bn2 = SE3BatchNorm(channels, lmax)
        self.drop2 = SE3Dropout(dropout)
        self.act2 = _Act(kind, channels, lmax, coefficients)
        self.lout = self.act2.lout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.act1(self.drop1(self.bn1(self.conv1(x)))))
        out = self.bn2(self.conv2(out))
        shortcut = self.pool(x[:, :, : n_coeffs(self.lmax)])
        return self.act2(self.drop2(out + shortcut))


class EquiLoPONet(nn.Module):
    """SE(3)-equivariant EquiLoPO ResNet with rotation-invariant logits."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        blocks: int = 8,
        activation: str = "local",
        channels: int = 4,
        lmax: int = 1,
        filter_lmax: int = 2,
        coefficients: str = "adaptive",
        dropout: float = 0.0,
        head: str = "softmax",
        head_norm: bool = False,
        lift_lmax: int | None = None,
        init_pool: bool = False,
    ):
        super().__init__()
        kind = activation
        lift_l = lmax + 1 if lift_lmax is None else lift_lmax
        self.lift = SO3Conv(in_channels, channels, 0, lift_l, filter_lmax)
        self.bn0 = SE3BatchNorm(channels, lift_l)
        self.conv0 = SO3Conv(channels, channels, 2 * lift_l if kind == "local" else lift_l, lmax, filter_lmax)
        # conv0 only reads degrees <= lmax + filter_lmax: the activation computes just those
        self.act0 = _Act(kind, channels, lift_l, coefficients, keep=self.conv0.lin_used)
        self.bn1 = SE3BatchNorm(channels, lmax)
        self.act1 = _Act(kind, channels, lmax, coefficients)
        self.init_pool = SymmetricAvgPool() if init_pool else nn.Identity()
        layers = []
        lin = self.act1.lout
        for stage, count in enumerate(STAGES[blocks]):
            for j in range(count):
                block = BasicBlock(channels, lin, lmax, filter_lmax, kind, coefficients, dropout, downsample=stage > 0 and j == 0)
                layers.append(block)
                lin = block.lout
        self.blocks = nn.Sequential(*layers)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        # head (names kept from the paper head: `softmax`, `fc`, so its checkpoints still load)
        self.head, self.head_lmax = head, lin
        self.softmax = SO3SoftMax(lin, coefficients)
        per_channel = 1 + {"softmax": 0, "spectrum": lin + 1, "gram": gram_size(lin)}[head]
        self.head_norm = nn.BatchNorm1d(channels * per_channel) if head_norm else nn.Identity()
        self.fc = nn.Linear(channels * per_channel, num_classes)

    def equivariant_layers(self) -> list:
        """Convs, batch norms, activations and residual blocks (SO(3)-Fourier fields), and the
        SoftMax head (invariant scalars per voxel)."""
        so3, scalar = SO3Fourier(), Scalar()
        layers = []
        for name, m in self.named_modules():
            if isinstance(m, (SO3Conv, SE3BatchNorm, _Act, BasicBlock, SymmetricAvgPool)):
                layers.append((name, m, so3))
            elif m is self.softmax:
                layers.append((name, m, scalar))
        return layers

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """SO(3)-function features of the last block, `(B, C, N, D', H', W')`."""
        x = x.unsqueeze(2)
        x = self.act0(self.bn0(self.lift(x)))
        x = self.init_pool(self.act1(self.bn1(self.conv0(x))))
        return self.blocks(x)

    def invariants(self, features: torch.Tensor) -> torch.Tensor:
        """Per-voxel rotation invariants `(B, F, D', H', W')` handed to the classifier.

        * ``softmax`` (paper, App. J.1): the SO(3) SoftMax of each channel, F = C.
        * ``spectrum``: the SoftMax plus each channel's power spectrum (f⁰ and the RMS of every
          degree l = 1..L of the last features), F = C·(L + 2).
        * ``gram``: the SoftMax plus each channel's row Gram matrices f^l (f^l)ᵀ/(2l+1) (upper
          triangles), F = C·(1 + Σ_l (2l+1)(l+1)).
        """
        parts = [self.softmax(features).unsqueeze(2)]
        if self.head == "spectrum":
            parts.append(power_spectrum(features, self.head_lmax))
        elif self.head == "gram":
            parts.append(row_gram(features, self.head_lmax))
        return torch.cat(parts, 2).flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        # spatial mean of the invariants; `head_norm` (BatchNorm1d on these scalars) keeps
        # invariance. The head runs in fp32 under autocast: bf16 logits (8 significant bits)
        # would round rotated copies of an input to different values.
        with full_precision(features):
            pooled = self.invariants(as_full_precision(features)).mean(dim=(2, 3, 4))
            return self.fc(self.head_norm(pooled))


def live_parameter_count(model: nn.Module) -> int:
    """Parameters that exist (all of them can receive a gradient)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def paper_parameter_count(model: nn.Module) -> int:
    """The count the paper reports for the same configuration: the authors allocate, per conv,
    C_in·C_out·Σ_{l1≤L_in} Σ_{l2≤L_f} (2l1+1)²(2l2+1)·P weights (dead ones included);
    every other parameter is the same in both implementations."""
    convs = [m for m in model.modules() if isinstance(m, SO3Conv)]
    conv_params = {id(p) for m in convs for p in m.parameters()}
    other = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in conv_params)
    return other + sum(m.paper_weight_count for m in convs)
