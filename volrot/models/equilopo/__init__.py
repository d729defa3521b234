"""EquiLoPO: SE(3)-equivariant ResNets with local polynomial activations on SO(3).

Zhemchuzhnikov & Grudinin, "On the Fourier analysis in the SO(3) space: the EquiLoPO
Network", ICLR 2025. Math, conventions and the authors' configuration:
docs/equilopo-math.md. Registered as ``equilopo``: declares SO(3) (exact on the 24 grid
rotations), its layers SO(3)-Fourier fields (`EquiLoPONet.equivariant_layers`).
"""

from __future__ import annotations

from volrot.errors import UserError
from volrot.models.equilopo.activation import COEFFICIENT_TYPES, GlobalActivation, LocalActivation, SO3SoftMax
from volrot.models.equilopo import invariants
from volrot.models.equilopo.conv import SO3Conv
from volrot.models.equilopo.layers import SE3BatchNorm, SE3Dropout, SymmetricAvgPool
from volrot.models.equilopo.network import HEADS, STAGES, EquiLoPONet, live_parameter_count, paper_parameter_count
from volrot.models.registry import register_model
from volrot.so3.groups import Symmetry, cube_group

__all__ = [
    "EquiLoPONet",
    "GlobalActivation",
    "LocalActivation",
    "SE3BatchNorm",
    "SE3Dropout",
    "SO3Conv",
    "SO3SoftMax",
    "SymmetricAvgPool",
    "equilopo",
    "invariants",
    "live_parameter_count",
    "paper_parameter_count",
]


@register_model(
    "equilopo",
    description="EquiLoPO ResNet: SO(3)-Fourier group convs, local polynomial ReLU on SO(3), invariant logits",
    symmetry=lambda **_: Symmetry("SO(3)", cube_group("O"), continuous=True),
)
def equilopo(
    *,
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
) -> EquiLoPONet:
    """Options: `blocks` 8 | 2 | 1 (ResNet-18 layout, the paper's 2- and 1-block models);
    `activation` local | global; `channels` (4 in the paper); `lmax` = degree L of the conv
    outputs (the authors' `order` − 1; local activations raise it to 2L); `filter_lmax` = spatial
    SH degree of the filters (2; 3 spans the whole 3³ kernel); `coefficients` adaptive | constant |
    trainable; `dropout` = probability of dropping a whole SO(3) function. Beyond the paper
    (docs/models.md): `head` softmax (paper) | spectrum | gram = which rotation invariants of
    the last features reach the classifier; `head_norm` = BatchNorm1d on the pooled invariants;
    `lift_lmax` = output degree of the lifting conv (default lmax + 1, the paper's);
    `init_pool` = halve the volume (symmetric average pooling) after the init block."""
    if blocks not in STAGES:
        raise UserError(f"model.blocks must be one of {sorted(STAGES)}, got {blocks!r}")
    if activation not in ("local", "global"):
        raise UserError(f"model.activation must be 'local' or 'global', got {activation!r}")
    if coefficients not in COEFFICIENT_TYPES:
        raise UserError(f"model.coefficients must be one of {', '.join(COEFFICIENT_TYPES)}, got {coefficients!r}")
    for key, value, low in (("channels", channels, 1), ("lmax", lmax, 0), ("filter_lmax", filter_lmax, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"model.{key} must be an integer >= {low}, got {value!r}")
    if lmax > 3:
        raise UserError(f"model.lmax must be <= 3 (local activations reach degree 2·lmax), got {lmax}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout!r}")
    if head not in HEADS:
        raise UserError(f"model.head must be one of {', '.join(HEADS)}, got {head!r}")
    if not isinstance(head_norm, bool):
        raise UserError(f"model.head_norm must be true or false, got {head_norm!r}")
    if not isinstance(init_pool, bool):
        raise UserError(f"model.init_pool must be true or false, got {init_pool!r}")
    if lift_lmax is not None and (not isinstance(lift_lmax, int) or isinstance(lift_lmax, bool) or not 0 <= lift_lmax <= 3):
        raise UserError(f"model.lift_lmax must be an integer in 0..3 (default lmax + 1), got {lift_lmax!r}")
    return EquiLoPONet(
        num_classes,
        in_channels,
        blocks=blocks,
        activation=activation,
        channels=channels,
        lmax=lmax,
        filter_lmax=filter_lmax,
        coefficients=coefficients,
        dropout=float(dropout),
        head=head,
        head_norm=head_norm,
        lift_lmax=lift_lmax,
        init_pool=init_pool,
    )
