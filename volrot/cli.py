"""The `volrot` command line: thin Typer shells over importable library functions.

Errors the user can cause (`volrot.errors.UserError`) print one line and exit with code 2;
`--debug` shows the traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import rich.markup
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
            if not _quiet_rank():  # under torchrun, rank 0 alone prints (every rank exits 2)
                # the message is text, not markup: "[1, 16, 16]" or "[/tmp/x]" must print as written
                err_console.print(f"[bold red]error:[/] {rich.markup.escape(str(e))}", markup=True)
            raise typer.Exit(code=UserError.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper


def _quiet_rank() -> bool:
    import os

    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0
    except ValueError:
        return False


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
        "  volrot train --recipe resnet3d_shapes --set optim.lr=0.01 --augment so3\n\n"
        "  volrot train --resume runs/resnet3d-shapes-20261122-101500\n\n"
        "  torchrun --nproc-per-node 4 -m volrot train --arch resnet3d --data organ"
    )
)
@user_errors
def train(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe YAML file, or the name of a shipped recipe (e.g. resnet3d_adrenal)."),
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
    download: Optional[bool] = typer.Option(
        None, "--download/--no-download", help="MedMNIST: download a missing file (data.download)."
    ),
    verify: Optional[bool] = typer.Option(
        None, "--verify/--no-verify", help="MedMNIST: MD5 mismatch is an error (default) or a warning (data.verify)."
    ),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a model; ends with validation/test ACC and AUC and the run folder."""
    from volrot.config import build_recipe
    from volrot.engine.train import train as run_training

    if resume is not None:
        given = [recipe, arch, data, root, size, epochs, batch_size, lr, seed, device, out, augment, name, download, verify]
        if set_ or any(v is not None for v in given):
            raise UserError("--resume takes the run's own recipe; it cannot be combined with other options")
        result = run_training(None, resume=resume, progress=not quiet, console=console)
    else:
        flags = dict(
            arch=arch, data=data, root=root, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
            seed=seed, device=device, out=out, augment=augment, name=name, download=download, verify=verify,
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
    table.add_column("symmetry (defaults)")
    table.add_column("options (defaults)")
    table.add_column("description")
    for n in list_models():
        e = get_entry(n)
        table.add_row(n, e.symmetry_of().describe(), ", ".join(f"{k}={v}" for k, v in e.defaults.items()), e.description)
    console.print(table)


@app.command(
    "eval-rotated",
    epilog=(
        "Examples:\n\n"
        "  volrot eval-rotated runs/<run>/best.safetensors --angles 30\n\n"
        "  volrot eval-rotated runs/<run>/best.safetensors --protocol octahedral --out rot/\n\n"
        "  volrot eval-rotated best.safetensors --data adrenal --root data/ --protocol haar --n 128 --seed 1"
    ),
)
@user_errors
def eval_rotated(
    checkpoint: Path = typer.Argument(..., help="Checkpoint from `volrot train` (best.safetensors)."),
    data: Optional[str] = typer.Option(None, help="Dataset; default: the one recorded in the checkpoint."),
    root: Optional[str] = typer.Option(None, help="Dataset folder (default: the recorded one)."),
    split: str = typer.Option("test", help="train | val | test."),
    protocol: List[str] = typer.Option(
        ["all"], "--protocol", "-p", help="all | octahedral | axes | so3-grid | haar (repeatable)."
    ),
    angles: float = typer.Option(30.0, help="Degrees: step of `axes`, spacing of `so3-grid`."),
    n: int = typer.Option(64, "--n", help="Number of Haar-random rotations (`haar`)."),
    seed: int = typer.Option(0, help="Seed of the Haar rotations."),
    mask: str = typer.Option("sphere", help="sphere (zero outside the inscribed sphere) | pad | none."),
    batch_size: int = typer.Option(32, "--batch-size", help="Volumes per forward pass."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: <checkpoint folder>/eval-rotated)."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Evaluate the first N volumes only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Measure ACC/AUC and logit invariance under 3D rotations of the test set.

    Writes report.json, report.csv and report.png and prints a summary table.
    """
    from volrot.engine.eval_rotated import evaluate_checkpoint
    from volrot.engine.rotated_report import print_report

    report, paths = evaluate_checkpoint(
        checkpoint, data=data, root=root, split=split, protocols=protocol, angles=angles, n=n, seed=seed,
        mask=mask, batch_size=batch_size, device=device, max_samples=max_samples, out=out, progress=not quiet,
    )  # fmt: skip
    print_report(report, console)
    console.print(f"report: {paths['report.json'].parent}  ({', '.join(paths)})")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot export runs/<run>/best.safetensors --format onnx --out model.onnx\n\n"
        "  volrot export runs/<run>/best.safetensors --format torchscript --out model.pt --sample scan.nii.gz\n\n"
        "  volrot export runs/<run>/best.safetensors --format pt2 --out model.pt2"
    )
)
@user_errors
def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint from `volrot train` (.safetensors)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript | pt2"),
    out: Path = typer.Option(..., "--out", "-o", help="Artifact file to write (atomically)."),
    exporter: str = typer.Option(
        "auto", help="auto (try in turn) | onnx: torchscript, dynamo | pt2: export, export+decompose | torchscript: trace."
    ),
    sample: List[Path] = typer.Option([], "--sample", help="NIfTI file / DICOM folder to verify on too (repeatable)."),
    tolerance: float = typer.Option(1e-4, help="Largest accepted max|Δlogit| / max|logit|."),
):
    """Export a checkpoint to ONNX / TorchScript / torch.export with metadata, verified against the eager model."""
    from volrot.artifacts.export import export_checkpoint

    report = export_checkpoint(checkpoint, format, out, exporter=exporter, samples=sample, tolerance=tolerance)
    from rich.table import Table

    table = Table(title=f"{report.format} ({report.exporter} exporter) vs eager model")
    table.add_column("inputs")
    table.add_column("max |Δ|", justify="right")
    table.add_column("relative", justify="right")
    for c in report.checks:
        table.add_row(c.name, f"{c.max_abs:.3g}", f"{c.max_rel:.3g}")
    console.print(table)
    for line in report.attempts:
        console.print(f"[yellow]exporter failed, next one used:[/] {line}")
    for line in report.notes:
        console.print(f"note: {line}")
    console.print(
        f"wrote {report.path}: max |Δ| {report.max_abs:.3g} = {report.max_rel:.3g} of max |logit| (tolerance {report.tolerance:g})",
        highlight=False,
    )


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot predict model.onnx scans/*.nii.gz --out preds.csv\n\n"
        "  volrot predict runs/<run>/best.safetensors dicom_studies/ --out preds.json --tta octahedral"
    )
)
@user_errors
def predict(
    model: Path = typer.Argument(..., help="Checkpoint (.safetensors) or exported ONNX file."),
    inputs: List[Path] = typer.Argument(..., help="NIfTI files, DICOM series folders, or folders of them."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="preds.csv or preds.json (written when all inputs are done)."),
    tta: str = typer.Option("none", help="Test-time augmentation: none | octahedral (mean over the 24 grid rotations)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Volumes per forward pass."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Predict classes of NIfTI files or DICOM series folders; bad inputs become error rows (exit 2 at the end)."""
    from volrot.inference.predict import predict_files

    report = predict_files(
        model, inputs, out=out, tta=tta, batch_size=batch_size, device=device, progress=not quiet, console=err_console
    )
    if out is None:
        from rich.table import Table

        table = Table()
        for col in ("input", "label", "probability", "error"):
            table.add_column(col)
        for r in report.rows:
            prob = "" if r["probability"] is None else f"{r['probability']:.3f}"
            table.add_row(r["path"], r["label"] or "", prob, r["error"] or "")
        console.print(table)
    n_err = len(report.errors)
    summary = f"{len(report.rows) - n_err} of {len(report.rows)} inputs predicted"
    if out is not None:
        summary += f"; wrote {out}"
    console.print(summary, highlight=False)
    if n_err:
        for r in report.errors:
            err_console.print(f"[bold red]error:[/] {rich.markup.escape(str(r['error']))}", markup=True)
        raise typer.Exit(code=UserError.exit_code)


@app.command(
    "inspect-activation",
    epilog=(
        "Examples:\n\n"
        "  volrot inspect-activation runs/<run>/best.safetensors --samples 8 --out inspect/\n\n"
        "  volrot inspect-activation runs/<run>/best.safetensors --layer blocks.0.act1 --functions 2000 --grid-deg 15\n\n"
        "  volrot inspect-activation runs/<run>/best.safetensors --data adrenal --root data/ --split val"
    ),
)
@user_errors
def inspect_activation(
    checkpoint: Path = typer.Argument(..., help="Checkpoint from `volrot train`."),
    data: Optional[str] = typer.Option(None, help="Dataset; default: the one recorded in the checkpoint."),
    root: Optional[str] = typer.Option(None, help="Dataset folder (default: the recorded one)."),
    split: str = typer.Option("test", help="train | val | test."),
    samples: int = typer.Option(4, help="Volumes run through the model (seeded draw from the split)."),
    layer: str = typer.Option("all", help="Activation layer name (or a parent module's name), or all."),
    functions: int = typer.Option(400, help="SO(3) functions drawn per activation layer for the plots."),
    grid_deg: float = typer.Option(20.0, "--grid-deg", help="Spacing (degrees) of the SO(3) grid the functions are evaluated on."),
    seed: int = typer.Option(0, help="Seed of the volume and function draws."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: <checkpoint folder>/inspect-activation)."),
):
    """Plot what the SO(3) activations do and measure feature-level equivariance.

    EquiLoPO: per local activation the joint density of input and output values on SO(3) with the
    ReLU line, the error against exact ReLU and the adaptive-coefficient regimes; SoftMax against
    the sampled maximum. Every arch: feature-map montage for an input and its copy rotated by 90°
    about z, and the equivariance error per layer. Writes PNGs and inspect.json, prints tables.
    """
    from volrot.inspection import inspect_checkpoint, print_report

    report, paths = inspect_checkpoint(
        checkpoint, data=data, root=root, split=split, samples=samples, layer=layer, functions=functions,
        grid_deg=grid_deg, seed=seed, device=device, out=out,
    )  # fmt: skip
    print_report(report, console)
    console.print(f"wrote {len(paths)} files to {paths['inspect.json'].parent} in {report.meta['elapsed_s']:.1f} s")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
