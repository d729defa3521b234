"""The `volrot` command line: thin Typer shells over importable library functions.

Errors the user can cause (`volrot.errors.UserError`) print one line and exit with code 2;
`--debug` shows the traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

import volrot
from volrot.errors import UserError

app = typer.Typer(
    name="volrot",
    help=(
        "Train and evaluate rotation-robust classifiers of 3D volumes, and prove how robust they are.\n\n"
        "First run (offline, built-in dataset, a few minutes on a CPU):\n\n"
        "    volrot train\n\n"
        "    volrot eval-rotated runs/<run>/best.safetensors --angles 30"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}


def user_errors(fn):
    """Turn a `UserError` into one line on stderr and exit code 2 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {e}", markup=True)
            raise typer.Exit(code=UserError.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper


def _version(value: bool):
    if value:
        console.print(f"volrot {volrot.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for user errors too."),
):
    _state["debug"] = debug


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot train                                   # small resnet3d on the built-in shapes set\n\n"
        "  volrot train --arch equilopo --data nodule     # paper recipe for EquiLoPO on NoduleMNIST3D\n\n"
        "  volrot train --recipe recipes/resnet3d_shapes.yaml --set optim.lr=0.01 --augment so3\n\n"
        "  volrot train --resume runs/resnet3d-shapes-20261122-101500\n\n"
        "  torchrun --nproc-per-node 4 -m volrot train --arch resnet3d --data organ"
    )
)
@user_errors
def train(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe YAML (see recipes/)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    arch: Optional[str] = typer.Option(None, help="Architecture (model.arch); see `volrot models`."),
    data: Optional[str] = typer.Option(None, help="Dataset (data.name): shapes, nodule, ..., nifti:PATH, dicom:PATH."),
    root: Optional[str] = typer.Option(None, help="Dataset folder (data.root)."),
    size: Optional[int] = typer.Option(None, help="Volume size (data.size), e.g. 28 or 64."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (train.epochs)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size (train.batch_size)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (optim.lr)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (train.seed)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (train.device)."),
    out: Optional[str] = typer.Option(None, help="Folder for run folders (train.out)."),
    augment: Optional[str] = typer.Option(None, help="none | so3 | octahedral (train.augment)."),
    name: Optional[str] = typer.Option(None, help="Run folder name (train.name)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a model; ends with validation/test ACC and AUC and the run folder."""
    from volrot.config import build_recipe
    from volrot.engine.train import train as run_training

    if resume is not None:
        given = [recipe, arch, data, root, size, epochs, batch_size, lr, seed, device, out, augment, name]
        if set_ or any(v is not None for v in given):
            raise UserError("--resume takes the run's own recipe; it cannot be combined with other options")
        result = run_training(None, resume=resume, progress=not quiet, console=console)
    else:
        flags = dict(
            arch=arch, data=data, root=root, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
            seed=seed, device=device, out=out, augment=augment, name=name,
        )
        rec = build_recipe(recipe, flags, set_)
        result = run_training(rec, progress=not quiet, console=console)
    from volrot.engine.train_report import print_result

    print_result(result, console)


@app.command()
@user_errors
def models():
    """List the registered architectures and their options."""
    from rich.table import Table

    from volrot.models import get_entry, list_models

    table = Table(title="volrot architectures")
    table.add_column("arch", style="bold")
    table.add_column("symmetry")
    table.add_column("options (defaults)")
    table.add_column("description")
    for n in list_models():
        e = get_entry(n)
        table.add_row(n, e.symmetry, ", ".join(f"{k}={v}" for k, v in e.defaults.items()), e.description)
    console.print(table)


def _not_built(command: str, issue: str):
    raise UserError(f"`volrot {command}` is not built yet ({issue})")


@app.command(
    "eval-rotated",
    epilog="Example:\n\n  volrot eval-rotated runs/<run>/best.safetensors --angles 30",
)
@user_errors
def eval_rotated(checkpoint: Path = typer.Argument(..., help="Checkpoint from `volrot train`.")):
    """Measure ACC/AUC and logit invariance under 3D rotations of the test set."""
    _not_built("eval-rotated", "rotation toolkit")


@app.command(epilog="Example:\n\n  volrot export runs/<run>/best.safetensors --format onnx --out model.onnx")
@user_errors
def export(checkpoint: Path = typer.Argument(..., help="Checkpoint from `volrot train`.")):
    """Export a checkpoint to ONNX / TorchScript / torch.export with metadata."""
    _not_built("export", "export and predict")


@app.command(epilog="Example:\n\n  volrot predict model.onnx scans/*.nii.gz --out preds.csv")
@user_errors
def predict(model: Path = typer.Argument(..., help="Checkpoint or exported ONNX file.")):
    """Predict classes of NIfTI files or DICOM series folders."""
    _not_built("predict", "export and predict")


@app.command(
    "inspect-activation",
    epilog="Example:\n\n  volrot inspect-activation runs/<run>/best.safetensors --samples 8 --out inspect/",
)
@user_errors
def inspect_activation(checkpoint: Path = typer.Argument(..., help="Checkpoint from `volrot train`.")):
    """Plot what the SO(3) activations do and measure feature-level equivariance."""
    _not_built("inspect-activation", "activation inspection")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
