"""The training loop: seeded, resumable, best-validation-AUC selection, atomic checkpoints.

Run folder (`train.out/<name>`):
    recipe.yaml              effective recipe
    data.json                dataset description (classes, split sizes, preprocessing, split)
    metrics.jsonl            one line per epoch (loss, ACC, AUC, lr, seconds, threads)
    curves.png               loss, ACC and AUC of train and val per epoch (redrawn each epoch)
    tensorboard/             the same as TensorBoard events, when tensorboard is installed
    best.safetensors         model checkpoint with the best validation AUC (+ final test metrics)
    last.safetensors         model checkpoint of the last finished epoch
    train_state.safetensors  optimizer/epoch/best state for `--resume`
    metrics.json             final validation/test metrics of the selected checkpoint, with the
                             run name, arch, parameter count, best epoch and training wall time
                             (`train_seconds`: the epochs' time summed over resumed sessions)

Determinism: torch's global RNG is re-seeded from (seed, epoch) at the start of every epoch and
the shuffling order is a function of (seed, epoch), so a resumed run reproduces an uninterrupted
one exactly on CPU for the same number of CPU threads (`train.threads`; float sums are split
differently with another count). The learning rate is a pure function of the epoch (MultiStepLR
semantics: × gamma at each milestone, given as fractions of `optim.schedule_epochs`, by default
`epochs`; an extended run keeps its original schedule, see `volrot.engine.resume`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from volrot.artifacts.checkpoint import checkpoint_metadata, read_tensors, save_checkpoint, save_tensors
from volrot.config import Recipe
from volrot.data import DataBundle, load_data
from volrot.device import autocast, resolve_device, use_threads
from volrot.engine.augment import augment_batch
from volrot.engine.distributed import DistContext, collective_failure, init_from_env, shutdown
from volrot.engine.evaluate import evaluate, softmax
from volrot.engine.metrics import compute_metrics, selection_key
from volrot.engine.preflight import check_recipe
from volrot.engine.resume import ResumePoint, open_run
from volrot.engine.run_folder import RunFolder, create_run_folder, os_failure
from volrot.engine.train_log import EpochLog
from volrot.progress import TaskProgress
from volrot.errors import UserError
from volrot.fileio import atomic_write_text
from volrot.models import count_parameters, create_model


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)  # {"val": {...}, "test": {...}, "best_epoch": n}
    completed: bool = True
    trained_epochs: int = 0  # epochs trained by this call (0: a finished run was resumed)
    epochs: int = 0  # epochs the recipe asks for
    is_main: bool = True  # False on the other ranks under torchrun (they print nothing)
    threads: int = 0  # CPU threads torch computed with
    removed: list[Path] = field(default_factory=list)  # stale temp files a resume removed


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; `resume_command` continues the run (None before its folder exists)."""

    def __init__(self, resume_command: str | None, is_main: bool = True):
        super().__init__(resume_command or "")
        self.resume_command = resume_command
        self.is_main = is_main  # under torchrun only rank 0 says so


def lr_at(recipe: Recipe, epoch: int) -> float:
    """Learning rate for 0-based `epoch` (MultiStepLR with milestones as fractions of epochs)."""
    o = recipe.optim
    total = o.schedule_epochs or recipe.train.epochs
    # A milestone at fraction f falls at epoch ceil(f * epochs): for 100 epochs and 0.5/0.75 the
    # drops come at epochs 50 and 75 (0-based), exactly as MedMNIST's MultiStepLR schedule.
    drops = sum(1 for f in o.milestones if epoch >= max(1, math.ceil(f * total - 1e-9)))
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


def resume_command(run_dir: Path, ctx: DistContext) -> str:
    """The command line that continues the run in `run_dir`."""
    cmd = f"volrot train --resume {shlex.quote(str(run_dir))}"
    return f"torchrun --nproc-per-node {ctx.world_size} -m {cmd}" if ctx.enabled else cmd


def train(
    recipe: Recipe | None,
    *,
    resume: str | Path | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    console=None,
) -> TrainResult:
    """Train `recipe` (or continue the run folder `resume`) and return the selected checkpoint.

    With `resume`, `epochs` extends the run (see `volrot.engine.resume`) and `threads` replaces
    its thread count. A run that already finished returns its recorded metrics with
    `trained_epochs == 0`. `stop_after_epoch` ends the run after that many epochs as if
    interrupted (for tests and for splitting long runs); `--resume` continues it. Ctrl-C raises
    `TrainingInterrupted`, which carries the command that continues the run.
    """
    point: ResumePoint | None = None
    if resume is not None:
        point = open_run(resume, epochs=epochs, threads=threads)
        recipe = point.recipe
    elif epochs is not None or threads is not None:
        raise TypeError("epochs= and threads= go with resume=; set recipe.train for a new run")
    check_recipe(recipe)
    if point is not None and point.finished:
        result = _finished_result(point)
        result.epochs = recipe.train.epochs
        return result

    previous_threads = torch.get_num_threads()
    n_threads = use_threads(_requested_threads(recipe, point))
    device = resolve_device(recipe.train.device)
    ctx = init_from_env(device, timeout_s=recipe.train.ddp_timeout_s)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    claimed: list[RunFolder] = []  # the run folder, once this run has created it
    try:
        result = _train(recipe, device, ctx, point, progress, stop_after_epoch, console, claimed)
        result.threads, result.is_main, result.epochs = n_threads, ctx.is_main, recipe.train.epochs
        result.removed = point.removed if point is not None else []
        return result
    except KeyboardInterrupt:
        run_dir = point.run_dir if point is not None else (claimed[0].path if claimed else None)
        command = resume_command(run_dir, ctx) if run_dir is not None else None
        raise TrainingInterrupted(command, ctx.is_main) from None
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
        torch.set_num_threads(previous_threads)


def _requested_threads(recipe: Recipe, point: ResumePoint | None) -> int | None:
    """train.threads; on resume, else the run's own count unless OMP_NUM_THREADS says otherwise."""
    if recipe.train.threads is not None or point is None or os.environ.get("OMP_NUM_THREADS", "").strip():
        return recipe.train.threads
    return point.threads


def _finished_result(point: ResumePoint) -> TrainResult:
    try:
        final = json.loads((point.run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"--resume {point.run_dir}: metrics.json is unreadable") from None
    return TrainResult(point.run_dir, point.run_dir / "best.safetensors", final, trained_epochs=0, removed=point.removed)


def _state_meta(recipe, epoch, best_key, best_epoch, best_val, opt_meta, train_seconds: float = 0.0) -> dict[str, Any]:
    return {
        "format": "volrot-checkpoint-train-state",
        "recipe": recipe.to_dict(),
        "epoch": epoch,
        "best_key": list(best_key),
        "best_epoch": best_epoch,
        "best_val": best_val,
        "train_seconds": train_seconds,
        "optimizer": opt_meta,
    }


def _epoch_info(loss: float | None, status: str = "") -> str:
    text = "loss –     " if loss is None else f"loss {loss:.4f}"
    return f"{text}  {status}".rstrip()


def _train(recipe, device, ctx, point, progress, stop_after_epoch, console, claimed) -> TrainResult:
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
    train_seconds = 0.0  # wall time of the finished epochs (training + validation), over resumes
    if point is not None:
        run_dir = point.run_dir
        if point.state is not None:
            tensors, meta = point.state
            model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
            _load_optimizer(optimizer, tensors, meta["optimizer"])
            start_epoch = int(meta["epoch"])
            best_key = tuple(meta["best_key"]) if meta["best_key"] is not None else None
            best_epoch, best_val = int(meta["best_epoch"]), meta["best_val"]
            train_seconds = float(meta.get("train_seconds", 0.0))
        if ctx.is_main:  # the recipe may have been extended (--epochs), the data re-described
            atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
            atomic_write_text(run_dir / "data.json", json.dumps(bundle.describe(), indent=2, default=str))
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
    end_epoch = t_cfg.epochs if stop_after_epoch is None else min(t_cfg.epochs, int(stop_after_epoch))
    show = progress and ctx.is_main
    log = EpochLog(run_dir) if ctx.is_main else None

    try:
        for epoch in range(start_epoch, end_epoch):
            t0 = time.perf_counter()
            torch.manual_seed(_epoch_seed(t_cfg.seed, epoch))
            lr = lr_at(recipe, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            order = _train_order(len(bundle.train), t_cfg.seed, epoch, ctx)
            loader = DataLoader(bundle.train, batch_size=per_rank_batch, sampler=order, num_workers=t_cfg.num_workers)
            net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            probs, labels = [], []
            bar = TaskProgress(show, f"epoch {epoch + 1}/{t_cfg.epochs}", len(loader), info=_epoch_info(None), console=console)
            with bar:
                for x, y in loader:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    x = augment_batch(x, t_cfg.augment)
                    with autocast(device, t_cfg.amp, cpu=t_cfg.cpu_amp):
                        logits = net(x)
                    loss = F.cross_entropy(logits.float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.item() * len(y)
                    correct += int((logits.argmax(1) == y).sum())
                    seen += len(y)
                    probs.append(softmax(logits.detach().float().cpu().numpy()))
                    labels.append(y.cpu().numpy())
                    bar.advance(1, info=_epoch_info(loss_sum / seen))
                ctx.sync_buffers(model)
                val = evaluate(model, bundle.val, bundle.task, **eval_kw)
                train_auc = compute_metrics(bundle.task, np.concatenate(labels), np.concatenate(probs))["auc"] if seen else math.nan
                key = selection_key(val)
                improved = best_key is None or key > best_key
                if improved:
                    best_key, best_epoch, best_val = key, epoch + 1, val
                status = f"val acc {val['acc']:.3f} auc {val['auc']:.3f}" + (" *" if improved else "")
                bar.set_info(_epoch_info(loss_sum / max(seen, 1), status))
            record = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "train_auc": train_auc,
                "val_loss": val["loss"],
                "val_acc": val["acc"],
                "val_auc": val["auc"],
                "seconds": round(time.perf_counter() - t0, 3),
                "threads": torch.get_num_threads(),
            }
            train_seconds += record["seconds"]
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
                    _state_meta(recipe, epoch + 1, best_key, best_epoch, best_val, opt_meta, train_seconds),
                )
                log.append(record)
            ctx.barrier()
    finally:
        if log is not None:
            log.close()

    trained = max(0, end_epoch - start_epoch)
    best_path = run_dir / "best.safetensors"
    completed = end_epoch >= t_cfg.epochs
    if not completed:
        metrics = {"epoch": end_epoch, "best_epoch": best_epoch, "val": best_val}
        return TrainResult(run_dir, best_path, metrics, completed=False, trained_epochs=trained)

    # Final: evaluate the selected checkpoint on val and test, record it in the checkpoint.
    best_tensors, best_meta = read_tensors(best_path) if ctx.is_main else (None, None)
    best_tensors = ctx.broadcast_object(best_tensors)
    model.load_state_dict(best_tensors)
    final = {
        "run_name": run_dir.name,
        "arch": recipe.model.arch,
        "parameters": meta_common["parameters"],
        "data": bundle.name,
        "epochs": t_cfg.epochs,
        "best_epoch": best_epoch,
        "train_seconds": round(train_seconds, 3),
        "val": evaluate(model, bundle.val, bundle.task, **eval_kw),
        "test": evaluate(model, bundle.test, bundle.task, **eval_kw),
    }
    if ctx.is_main:
        best_meta = {**best_meta, "metrics": {"val": final["val"], "test": final["test"]}}
        save_checkpoint(best_path, model, best_meta)
        atomic_write_text(run_dir / "metrics.json", json.dumps(final, indent=2))
    return TrainResult(run_dir, best_path, final, trained_epochs=trained)
