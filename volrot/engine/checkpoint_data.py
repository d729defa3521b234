"""A checkpoint and the data it was trained on: the one "run from checkpoint → data split" step
that `eval-rotated`, `inspect-activation` and `export` share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volrot.config import recorded_data_config
from volrot.errors import UserError

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"--split must be train, val or test, got '{split}'")
    return split


def recorded_bundle(meta: dict[str, Any], *, source: str, data: str | None = None, root: str | None = None, **fields: Any):
    """The `DataBundle` of the dataset recorded in checkpoint metadata `meta` (`data` / `root`
    replace it; other `DataConfig` fields by keyword, e.g. `max_samples=4, download=False`)."""
    from volrot.data import load_data

    return load_data(recorded_data_config(meta, source=source, data=data, root=root, **fields))


@dataclass
class CheckpointSplit:
    model: Any  # nn.Module in eval mode
    card: Any  # volrot.artifacts.card.ModelCard
    bundle: Any  # DataBundle
    dataset: Any  # the chosen split

    @property
    def meta(self) -> dict[str, Any]:
        """The model card as a dict (what the checkpoint holds)."""
        return self.card.to_dict()


def checkpoint_split(
    checkpoint: str | Path,
    *,
    split: str = "test",
    data: str | None = None,
    root: str | None = None,
    device: Any = "cpu",
    **fields: Any,
) -> CheckpointSplit:
    """Load a checkpoint and one split of its recorded data (or of `data`); the model's class
    count must match the data's."""
    from volrot.artifacts.checkpoint import load_checkpoint

    path = Path(checkpoint)
    check_split(split)
    model, card = load_checkpoint(path, device=device)
    bundle = recorded_bundle(card.to_dict(), source=str(path), data=data, root=root, **fields)
    if card.num_classes != bundle.num_classes:
        raise UserError(f"{path}: the model predicts {card.num_classes} classes but data '{bundle.name}' has {bundle.num_classes}")
    return CheckpointSplit(model, card, bundle, bundle.split(split))
