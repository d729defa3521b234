"""Prediction over a split and its metrics (ACC/AUC as medmnist's Evaluator)."""

from __future__ import annotations


import numpy as np
from scipy.special import softmax
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from volrot.device import autocast
from volrot.engine.distributed import DistContext
from volrot.engine.metrics import compute_metrics


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    amp: bool = False,
    ctx: DistContext | None = None,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and float32 logits (N, K) of a whole split, in dataset order.

    Under a process group each rank predicts its shard and the results are gathered, so each
    item is evaluated exactly once.
    """
    ctx = ctx or DistContext()
    device = torch.device(device)
    indices = ctx.shard(list(range(len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=num_workers)
    was_training = model.training
    model.eval()
    labels, logits = [], []
    for x, y in loader:
        with autocast(device, amp):
            out = model(x.to(device, non_blocking=True))
        logits.append(out.float().cpu().numpy())
        labels.append(np.asarray(y).reshape(-1))
    model.train(was_training)
    mine = (
        indices,
        np.concatenate(labels) if labels else np.zeros(0, np.int64),
        np.concatenate(logits) if logits else None,
    )
    parts = ctx.gather_objects(mine)
    k = next(p[2].shape[1] for p in parts if p[2] is not None)
    all_logits = np.zeros((len(dataset), k), np.float32)
    all_labels = np.zeros(len(dataset), np.int64)
    for idx, lab, lg in parts:
        if lg is not None:
            all_logits[idx] = lg
            all_labels[idx] = lab
    return all_labels, all_logits


def evaluate(model: nn.Module, dataset: Dataset, task: str, **kw) -> dict[str, float]:
    """ACC, AUC and mean cross-entropy loss of `model` on `dataset`."""
    y, logits = predict_logits(model, dataset, **kw)
    probs = softmax(logits, axis=1)
    metrics = compute_metrics(task, y, probs)
    metrics["loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))
    return metrics
