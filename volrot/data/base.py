"""What every data source returns: a `DataBundle` of three splits plus their description.

A split is a `torch.utils.data.Dataset` whose items are `(volume, label)` with `volume` a float32
tensor `(C, D, H, W)` and `label` an int in `[0, len(class_names))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

TASKS = ("binary", "multi-class")


@dataclass
class DataBundle:
    name: str  # canonical name, e.g. "shapes", "adrenalmnist3d", "nifti:/data/manifest.csv"
    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    in_channels: int
    input_size: tuple[int, int, int]
    task: str  # "binary" | "multi-class"
    preprocessing: dict[str, Any] = field(default_factory=dict)  # recorded in checkpoints
    info: dict[str, Any] = field(default_factory=dict)  # source details (files, split sizes...)

    def split(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description stored in checkpoint metadata."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "in_channels": self.in_channels,
            "input_size": list(self.input_size),
            "task": self.task,
            "preprocessing": self.preprocessing,
            "split_sizes": {s: len(self.split(s)) for s in ("train", "val", "test")},
            **({"info": self.info} if self.info else {}),
        }


class ArrayDataset(Dataset):
    """Volumes held in memory: `images` (N, C, D, H, W) or (N, D, H, W) float/uint8, `labels` (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, scale: float = 1.0):
        if images.ndim == 4:
            images = images[:, None]
        self.images = images
        self.labels = np.asarray(labels).reshape(-1).astype(np.int64)
        self.scale = scale
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        vol = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32))
        if self.scale != 1.0:
            vol = vol * self.scale
        return vol, int(self.labels[i])
