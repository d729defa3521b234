"""ACC and AUC exactly as MedMNIST's `Evaluator` computes them.

- binary: AUC = roc_auc_score(y, p[:, -1]); ACC = mean((p[:, -1] > 0.5) == y)
- multi-class: AUC = unweighted mean over classes of one-vs-rest roc_auc_score(y == i, p[:, i]);
  ACC = mean(argmax(p) == y)

`probs` are softmax probabilities (not logits). Where medmnist would raise because a class is
absent from `y_true` (tiny subsets), the AUC is taken over the classes present (NaN when fewer
than two are), instead of failing.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, score))


def compute_metrics(task: str, y_true, probs) -> dict[str, float]:
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must be (N, K) with N = {len(y)}, got {p.shape}")
    if len(y) == 0:
        return {"acc": math.nan, "auc": math.nan}
    if task == "binary":
        acc = float(np.mean((p[:, -1] > 0.5) == y))
        auc = _auc(y, p[:, -1])
    elif task == "multi-class":
        acc = float(np.mean(np.argmax(p, axis=1) == y))
        per_class = [_auc((y == i).astype(np.int64), p[:, i]) for i in range(p.shape[1])]
        present = [a for a in per_class if not math.isnan(a)]
        auc = float(np.mean(present)) if present else math.nan
    else:
        raise ValueError(f"unknown task {task!r}")
    return {"acc": acc, "auc": auc}


def selection_key(metrics: dict[str, float]) -> tuple[float, float]:
    """Order for model selection: best AUC, then best ACC (NaN counts as worst)."""
    def val(x):
        return -math.inf if x is None or math.isnan(x) else x

    return (val(metrics.get("auc")), val(metrics.get("acc")))
