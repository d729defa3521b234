"""Prediction results: one row per input (label, probabilities, preprocessing, error) and the
report that collects them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from volrot.errors import UserError


def make_row(path: Path, class_names: list[str], probs: np.ndarray | None, summary: dict | None, error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"path": str(path), "label": None, "probability": None, "probabilities": {}, "preprocessing": summary or {}, "error": error}
    if probs is not None:
        k = int(np.argmax(probs))
        row["label"] = class_names[k]
        row["probability"] = float(probs[k])
        row["probabilities"] = {name: float(p) for name, p in zip(class_names, probs)}
    return row


@dataclass
class PredictReport:
    rows: list[dict[str, Any]]
    class_names: list[str]
    model: dict[str, Any]
    out: Path | None = None
    tta: str = "none"
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["error"]]


def _error_text(e: BaseException) -> str:
    if isinstance(e, UserError):
        return str(e)
    return " ".join(f"{type(e).__name__}: {e}".split())


def error_text(e: BaseException) -> str:
    """One line for an error row: a `UserError`'s message, else the exception type and message."""
    if isinstance(e, UserError):
        return str(e)
    return " ".join(f"{type(e).__name__}: {e}".split())
