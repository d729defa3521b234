"""The training loop: seeded, resumable, best-validation-AUC selection, atomic checkpoints.

Run folder (`train.out/<name>`):
    recipe.yaml              effective recipe
    data.json                dataset description (classes, split sizes, preprocessing, split)
    metrics.jsonl            one line per epoch (loss, ACC, AUC, lr, seconds)
    best.safetensors         model checkpoint with the best validation AUC (+ final test metrics)
    last.safetensors         model checkpoint of the last finished epoch
    train_state.safetensors  optimizer/epoch/best state for `--resume`
    metrics.json             final validation/test metrics of the selected checkpoint

Determinism: torch's global RNG is re-seeded from (seed, epoch) at the start of every epoch and
the shuffling order is a function of (seed, epoch), so a resumed run reproduces an uninterrupted
one exactly on CPU. The learning rate is a pure function of the epoch (MultiStepLR semantics:
× gamma at each milestone, given as fractions of `epochs`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from volrot.artifacts.checkpoint import atomic_write_text, checkpoint_metadata, read_tensors, save_checkpoint, save_tensors
from volrot.config import Recipe, recipe_from_dict, validate_model_options
from volrot.data import DataBundle, load_data
from volrot.engine.augment import augment_batch, check_augment
from volrot.engine.distributed import DistContext, collective_failure, init_from_env, shutdown
from volrot.engine.run_folder import RunFolder, create_run_folder, os_failure
from volrot.device import autocast, resolve_device
from volrot.engine.evaluate import evaluate
from volrot.engine.metrics import selection_key
from volrot.errors import UserError
from volrot.models import count_parameters, create_model


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)  # {"val": {...}, "test": {...}, "best_epoch": n}
    completed: bool = True


def lr_at(recipe: Recipe, epoch: int) -> float:
    """Learning rate for 0-based `epoch` (MultiStepLR with milestones as fractions of epochs)."""
    o = recipe.optim
    # A milestone at fraction f falls at epoch ceil(f * epochs): for 100 epochs and 0.5/0.75 the
    # drops come at epochs 50 and 75 (0-based), exactly as MedMNIST's MultiStepLR schedule.
    drops = sum(1 for f in o.milestones if epoch >= max(1, math.ceil(f * recipe.train.epochs - 1e-9)))
    return o.lr * (o.gamma**drops)


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    o = recipe.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    raise UserError(f"unknown optimizer 'optim.name: {o.name}' (choose from: adam, adamw, sgd)")


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def _train_order(n: int, seed: int, epoch: int, ctx: DistContext) -> list[int]:
    g = torch.Generator().manual_seed(_epoch_seed(seed, epoch) + 7)
    perm = torch.randperm(n, generator=g).tolist()
    if ctx.enabled:  # equal shard lengths keep DDP ranks in step (wrap like DistributedSampler)
        per = math.ceil(n / ctx.world_size)
        perm = (perm * 2)[: per * ctx.world_size]
        perm = perm[ctx.rank :: ctx.world_size]
    return perm


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _new_run_dir(recipe: Recipe, bundle: DataBundle) -> RunFolder:
    """Create the run folder exclusively: `train.name`, or `<arch>-<data>-<timestamp>[-N]`."""
    base = f"{recipe.model.arch}-{bundle.name.split(':')[0]}"
    return create_run_folder(recipe.train.out, recipe.train.name, base)


class _Progress:
    """Rich progress bar over the batches of an epoch (rank 0 only).

    On a terminal the bar updates live; otherwise (logs, CI) one line is printed per epoch.
    """

    def __init__(self, enabled: bool, console=None):
        from rich.console import Console

        self.enabled = enabled
        self.console = console or Console()
        self.bar = None
        self.lines: dict[int, dict] = {}
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=False,
            )

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def add(self, epoch: str, total: int):
        if not self.enabled:
            return None
        if self.bar is None:
            key = len(self.lines)
            self.lines[key] = {"epoch": epoch, "loss": float("nan")}
            return key
        return self.bar.add_task("train", total=total, epoch=epoch, loss=float("nan"), status="")

    def update(self, task, **kw):
        if task is None:
            return
        if self.bar is not None:
            self.bar.update(task, **kw)
            return
        line = self.lines[task]
        line.update({k: v for k, v in kw.items() if k in ("loss", "status")})
        if "status" in kw:  # the epoch is over
            self.console.print(f"epoch {line['epoch']}  loss {line['loss']:.4f}  {line['status']}", highlight=False)


def train(
    recipe: Recipe,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    console=None,
) -> TrainResult:
    """Train `recipe` (or continue the run folder `resume`) and return the selected checkpoint.

    `stop_after_epoch` ends the run after that many epochs as if interrupted (for tests and for
    splitting long runs); `--resume` continues it.
    """
    resume_state = None
    if resume is not None:
        run_dir = Path(resume)
        state_file = run_dir / "train_state.safetensors"
        if not state_file.is_file():
            raise UserError(f"--resume {run_dir}: no train_state.safetensors in that folder")
        resume_state = read_tensors(state_file)
        recipe = recipe_from_dict(resume_state[1]["recipe"], source=str(state_file))

    validate_model_options(recipe)
    check_augment(recipe.train.augment)
    device = resolve_device(recipe.train.device)
    ctx = init_from_env(device, timeout_s=recipe.train.ddp_timeout_s)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    claimed: list[RunFolder] = []  # the run folder, once this run has created it
    try:
        return _train(recipe, device, ctx, resume_state, resume, progress, stop_after_epoch, console, claimed)
    except OSError as e:
        failure = os_failure(e, claimed, resume)
        if failure is None:
            raise
        raise failure from None
    except RuntimeError as e:
        failure = collective_failure(e, ctx, recipe.train.ddp_timeout_s)
        if failure is None:
            raise
        raise failure from None
    finally:
        shutdown(ctx)


def _train(recipe, device, ctx, resume_state, resume, progress, stop_after_epoch, console, claimed) -> TrainResult:
    t_cfg = recipe.train
    torch.manual_seed(t_cfg.seed)
    np.random.seed(t_cfg.seed % (2**32))

    # Everything that can fail on user input happens before the run folder exists.
    bundle = load_data(recipe.data)
    for split in ("train", "val", "test"):
        if len(bundle.split(split)) == 0:
            raise UserError(f"data {recipe.data.name}: the {split} split is empty; nothing to train or select on")
    model = create_model(
        recipe.model.arch, num_classes=bundle.num_classes, in_channels=bundle.in_channels, **recipe.model.options
    ).to(device)
    if t_cfg.epochs < 1 or t_cfg.batch_size < 1:
        raise UserError("train.epochs and train.batch_size must be at least 1")
    per_rank_batch = max(1, t_cfg.batch_size // ctx.world_size)
    optimizer = make_optimizer(recipe, model.parameters())

    meta_common = {
        "class_names": bundle.class_names,
        "input": {"shape": [bundle.in_channels, *bundle.input_size], "dtype": "float32"},
        "data": bundle.describe(),
        "preprocessing": bundle.preprocessing,
        "recipe": recipe.to_dict(),
        "parameters": count_parameters(model),
    }

    start_epoch, best_key, best_epoch, best_val = 0, None, -1, {}
    if resume_state is not None:
        tensors, meta = resume_state
        run_dir = Path(resume)
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        _load_optimizer(optimizer, tensors, meta["optimizer"])
        start_epoch = int(meta["epoch"])
        best_key = tuple(meta["best_key"]) if meta["best_key"] is not None else None
        best_epoch, best_val = int(meta["best_epoch"]), meta["best_val"]
    else:

        def start() -> str:  # rank 0; a UserError here reaches every rank (one line, exit 2)
            claimed.append(_new_run_dir(recipe, bundle))
            folder = claimed[0].path
            try:
                atomic_write_text(folder / "recipe.yaml", recipe.to_yaml())
                atomic_write_text(folder / "data.json", json.dumps(bundle.describe(), indent=2, default=str))
            except OSError as e:
                failure = os_failure(e, claimed, None)
                if failure is None:
                    raise
                raise failure from None
            return str(folder)

        run_dir = Path(ctx.run_on_main(start))

    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    eval_kw = dict(batch_size=t_cfg.batch_size, device=device, amp=t_cfg.amp, ctx=ctx, num_workers=t_cfg.num_workers)
    log_path = run_dir / "metrics.jsonl"
    end_epoch = t_cfg.epochs if stop_after_epoch is None else min(t_cfg.epochs, int(stop_after_epoch))
    show = progress and ctx.is_main

    with _Progress(show, console) as bar:
        for epoch in range(start_epoch, end_epoch):
            t0 = time.perf_counter()
            torch.manual_seed(_epoch_seed(t_cfg.seed, epoch))
            lr = lr_at(recipe, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            order = _train_order(len(bundle.train), t_cfg.seed, epoch, ctx)
            loader = DataLoader(bundle.train, batch_size=per_rank_batch, sampler=order, num_workers=t_cfg.num_workers)
            task = bar.add(f"{epoch + 1}/{t_cfg.epochs}", len(loader))
            net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                x = augment_batch(x, t_cfg.augment)
                with autocast(device, t_cfg.amp):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.update(task, advance=1, loss=loss_sum / seen)
            ctx.sync_buffers(model)
            val = evaluate(model, bundle.val, bundle.task, **eval_kw)
            record = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "val_loss": val["loss"],
                "val_acc": val["acc"],
                "val_auc": val["auc"],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            key = selection_key(val)
            improved = best_key is None or key > best_key
            if improved:
                best_key, best_epoch, best_val = key, epoch + 1, val
            bar.update(task, status=f"val acc {val['acc']:.3f} auc {val['auc']:.3f}" + (" *" if improved else ""))
            if ctx.is_main:
                meta = checkpoint_metadata(model, **meta_common, epoch=epoch + 1, metrics={"val": val})
                if improved:
                    save_checkpoint(run_dir / "best.safetensors", model, {**meta, "selected_by": "val_auc"})
                save_checkpoint(run_dir / "last.safetensors", model, meta)
                opt_tensors, opt_meta = _optimizer_tensors(optimizer)
                state_tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors}
                save_tensors(
                    run_dir / "train_state.safetensors",
                    state_tensors,
                    {
                        "format": "volrot-checkpoint-train-state",
                        "recipe": recipe.to_dict(),
                        "epoch": epoch + 1,
                        "best_key": list(best_key),
                        "best_epoch": best_epoch,
                        "best_val": best_val,
                        "optimizer": opt_meta,
                    },
                )
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            ctx.barrier()

    best_path = run_dir / "best.safetensors"
    completed = end_epoch >= t_cfg.epochs
    if not completed:
        metrics = {"epoch": end_epoch, "best_epoch": best_epoch, "val": best_val}
        return TrainResult(run_dir, best_path, metrics, completed=False)

    # Final: evaluate the selected checkpoint on val and test, record it in the checkpoint.
    best_tensors, best_meta = read_tensors(best_path) if ctx.is_main else (None, None)
    best_tensors = ctx.broadcast_object(best_tensors)
    model.load_state_dict(best_tensors)
    final = {
        "best_epoch": best_epoch,
        "val": evaluate(model, bundle.val, bundle.task, **eval_kw),
        "test": evaluate(model, bundle.test, bundle.task, **eval_kw),
    }
    if ctx.is_main:
        best_meta = {**best_meta, "metrics": {"val": final["val"], "test": final["test"]}}
        save_checkpoint(best_path, model, best_meta)
        atomic_write_text(run_dir / "metrics.json", json.dumps(final, indent=2))
    return TrainResult(run_dir, best_path, final)
