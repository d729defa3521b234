"""Helpers shared by the model tests (tests/test_models.py, tests/test_equilopo_*.py)."""

from __future__ import annotations

import torch


def calibrate(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Set the running statistics of every batch norm (torch, e3nn, EquiLoPO) to those of `x`
    (momentum 1, one training-mode pass without gradients)."""
    norms = [m for m in model.modules() if hasattr(m, "running_mean") and hasattr(m, "momentum")]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
