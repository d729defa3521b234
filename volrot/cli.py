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

# --- help text: metavars instead of Python types (`<list[str]>`) ---------------------------------


def _metavar(param) -> str:
    """PATH, INT, FLOAT or TEXT from the parameter's type; nothing for a flag."""
    from typing import get_args, get_origin

    if getattr(param, "is_flag", False):
        return ""
    desc = getattr(param, "type_descriptor", None)  # Typer >= 0.2x; older Typer: a click type
    kind = desc.annotation if desc is not None else getattr(param, "type", None)
    if get_origin(kind) is list:
        kind = get_args(kind)[0]
    if desc is not None and desc.is_path or kind is Path or type(kind).__name__ == "Path":
        return "PATH"
    name = getattr(kind, "__name__", None) or getattr(kind, "name", "")
    return {"int": "INT", "integer": "INT", "float": "FLOAT"}.get(str(name).lower(), "TEXT")


def _set_metavars(params) -> None:
    for p in params:
        if p.param_type_name == "argument":
            p.metavar = p.name.upper()
            shown = _metavar(p) + ("..." if p.nargs == -1 else "")
            p.display_type_rich = lambda ctx=None, shown=shown: shown  # Typer ignores an argument's metavar there
        elif p.metavar is None:
            p.metavar = _metavar(p)


class _Command(typer.core.TyperCommand):
    """Every command's help shows click-style metavars (PATH, INT, TEXT, MODEL...) where Typer
    would print Python types such as `<list[str]>` or `<bool>`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _set_metavars(self.params)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Group(typer.core.TyperGroup):
    """`volrot --help`: the same metavars as the commands (the shell-completion options, which
    Typer adds after construction, included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _set_metavars(self.params)

    def get_params(self, ctx):
        params = super().get_params(ctx)
        _set_metavars(params)
        return params

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option



app = typer.Typer(
    name="volrot",
    help=(
        "Train and evaluate rotation-robust classifiers of 3D volumes, and prove how robust they are.\n\n"
        "First run (offline, built-in dataset, a few minutes on a CPU):\n\n"
        "    volrot train\n\n"
        "    volrot eval-rotated runs/<run>/best.safetensors --angles 30"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=_Group,
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
        except KeyboardInterrupt as e:
            if getattr(e, "is_main", True):  # torchrun: rank 0 alone reports
                err_console.print("interrupted")
                command = getattr(e, "resume_command", None)
                if command:
                    err_console.print(f"continue with: {command}", markup=False)
            raise typer.Exit(code=130) from None

    return wrapper


def _before_heavy_imports(threads: int | None, *, checkpoint: Path | None = None, what: str = "checkpoint") -> None:
    """Fast checks before torch is imported, then the CPU thread count (`volrot.device.apply_threads`)."""
    from volrot.device import apply_threads

    if checkpoint is not None and not checkpoint.exists():
        raise UserError(f"{what} not found: {checkpoint}")
    apply_threads(threads)


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
    from volrot.device import prefer_passive_wait

    prefer_passive_wait()  # before torch loads: waiting OpenMP threads must not spin on a busy machine


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot train                                   # small resnet3d on the built-in shapes set\n\n"
        "  volrot train --arch equilopo --data nodule     # paper recipe for EquiLoPO on NoduleMNIST3D\n\n"
        "  volrot train --recipe resnet3d_shapes --set optim.lr=0.01 --augment so3\n\n"
        "  volrot train --resume runs/resnet3d-shapes-20261122-101500\n\n"
        "  volrot train --resume runs/resnet3d-shapes-20261122-101500 --epochs 10   # extend\n\n"
        "  volrot train --arch equilopo --data nodule --dry-run\n\n"
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
    augment: Optional[str] = typer.Option(None, help="none | so3 | octahedral | resample (rotation-free R·Rᵀ round trip) (train.augment)."),
    name: Optional[str] = typer.Option(None, help="Run folder name (train.name)."),
    download: Optional[bool] = typer.Option(
        None, "--download/--no-download", help="MedMNIST: download a missing file (data.download)."
    ),
    verify: Optional[bool] = typer.Option(
        None, "--verify/--no-verify", help="MedMNIST: MD5 mismatch is an error (default) or a warning (data.verify)."
    ),
    resume: Optional[Path] = typer.Option(
        None, help="Continue the run in this run folder (with --epochs N: extend it to N epochs)."
    ),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads (train.threads); default: $OMP_NUM_THREADS, else the idle cores.", min=1
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the effective recipe and the parameter count; train and write nothing."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a model; ends with validation/test ACC and AUC and the run folder."""
    flags = dict(
        arch=arch, data=data, root=root, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, device=device, out=out, augment=augment, name=name, download=download, verify=verify,
        threads=threads,
    )  # fmt: skip
    if resume is not None:
        _train_resume(resume, flags, set_, recipe, dry_run, quiet)
    else:
        _train_new(recipe, flags, set_, dry_run, quiet)


def _train_new(recipe, flags, set_, dry_run: bool, quiet: bool) -> None:
    from volrot.config import build_recipe
    from volrot.engine.preflight import check_recipe

    rec = build_recipe(recipe, flags, set_)
    check_recipe(rec)  # before torch is imported: a typo is refused at once
    if dry_run:
        from volrot.engine.dry_run import dry_run as plan, print_plan

        print_plan(plan(rec), console)
        return
    from volrot.engine.train import train as run_training

    _print_training(run_training(rec, progress=not quiet, console=console))


def _train_resume(resume: Path, flags, set_, recipe, dry_run: bool, quiet: bool) -> None:
    extra = [k for k, v in flags.items() if v is not None and k not in ("epochs", "threads")]
    if set_ or recipe is not None or extra or dry_run:
        raise UserError("--resume takes the run's own recipe; only --epochs, --threads and -q go with it")
    if not resume.is_dir():
        raise UserError(f"--resume {resume}: no such run folder")
    from volrot.engine.train import train as run_training

    result = run_training(
        None, resume=resume, epochs=flags["epochs"], threads=flags["threads"], progress=not quiet, console=console
    )
    _print_training(result)


def _print_training(result) -> None:
    from volrot.engine.train_report import print_result

    if not result.is_main:  # torchrun: rank 0 alone reports
        return
    for p in result.removed:
        console.print(f"removed a temporary file of an interrupted write: {p}", highlight=False, soft_wrap=True)
    if result.completed and result.trained_epochs == 0:
        console.print(
            f"nothing was trained: {result.run_dir} has finished its {result.epochs} epochs "
            f"(extend it with: volrot train --resume {result.run_dir} --epochs N)",
            highlight=False,
            soft_wrap=True,
        )
    print_result(result, console)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot models\n\n"
        "  volrot train --arch equilopo --set model.blocks=1 --set model.channels=2   # options from this table"
    )
)
@user_errors
def models():
    """List the registered architectures, their symmetry and their options (with defaults)."""
    from rich import box
    from rich.table import Table

    from volrot.models.catalog import catalog_entry, catalog_names

    # reads at 80 columns: one option per line, nothing cut (`…`); long words fold
    table = Table(title="volrot architectures", box=box.SIMPLE_HEAD, show_lines=True, show_edge=False, padding=(0, 1), pad_edge=False)
    table.add_column("arch", style="bold", no_wrap=True)
    table.add_column("symmetry (defaults)", overflow="fold")
    table.add_column("options (defaults)", no_wrap=True)
    table.add_column("description")  # words wrap
    for n in catalog_names():
        e = catalog_entry(n)
        table.add_row(n, e.symmetry_text, "\n".join(f"{k}={v}" for k, v in e.defaults.items()), e.description)
    console.print(table)
    console.print("Set an option with --set model.<option>=<value> (volrot train --help); details: docs/models.md")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot runs                 # the runs under runs/\n\n"
        "  volrot runs experiments/    # another train.out folder"
    )
)
@user_errors
def runs(folder: Path = typer.Argument(Path("runs"), help="Folder holding run folders (train.out).")):
    """Table of the runs in a folder: arch, data, epochs, best epoch, test and rotated metrics, time."""
    from volrot.engine.runs import list_runs, print_runs

    print_runs(list_runs(folder), console, folder)


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
        ["all"], "--protocol", "-p",
        help="all | octahedral | axes | so3-grid | haar | rendered (repeatable; all = the first four; "
        "rendered: shapes only, each volume rendered in the Haar poses, no resampling).",
    ),
    angles: float = typer.Option(30.0, help="Degrees: step of `axes`, spacing of `so3-grid`."),
    n: int = typer.Option(64, "--n", help="Number of Haar-random rotations (`haar`)."),
    seed: int = typer.Option(0, help="Seed of the Haar rotations."),
    mask: str = typer.Option("sphere", help="sphere (zero outside the inscribed sphere) | pad | none."),
    resample: str = typer.Option(
        "trilinear", help="trilinear | spline3 (cubic B-spline, CPU): path of the resampled rotations and the control."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Volumes per forward pass."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: a new <checkpoint folder>/eval-rotated/<date>-<time>/)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the report in an existing --out folder."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Evaluate N volumes, stratified by class (each class keeps its share)."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads; default: $OMP_NUM_THREADS, else the idle cores.", min=1
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Measure ACC/AUC and logit invariance under 3D rotations of the test set.

    Writes report.json, report.csv and report.png and prints a summary table.
        """
    _before_heavy_imports(threads, checkpoint=checkpoint)
    from volrot.engine.eval_rotated import evaluate_checkpoint
    from volrot.engine.rotated_report import print_report

    report, paths = evaluate_checkpoint(
        checkpoint, data=data, root=root, split=split, protocols=protocol, angles=angles, n=n, seed=seed,
        mask=mask, batch_size=batch_size, device=device, max_samples=max_samples, out=out, force=force,
        progress=not quiet, resample=resample,
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
    _before_heavy_imports(None, checkpoint=checkpoint)
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
    for line in report.attempts:  # "<exporter>: <why it was rejected>", in the order tried
        tried, _, why = line.partition(": ")
        console.print(
            f"[yellow]rejected the {tried} exporter[/] ({rich.markup.escape(why)}); used the {report.exporter} exporter instead",
            highlight=False,
        )
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
    threads: Optional[int] = typer.Option(
        None, help="CPU threads; default: $OMP_NUM_THREADS, else the idle cores.", min=1
    ),
    series_uid: Optional[str] = typer.Option(
        None, "--series-uid", metavar="UID", help="DICOM folders holding several series: use the series with this SeriesInstanceUID."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Predict classes of NIfTI files or DICOM series folders; bad inputs become error rows (exit 2 at the end)."""
    _before_heavy_imports(threads, checkpoint=model, what="model file")
    from volrot.inference.predict import predict_files

    report = predict_files(
        model, inputs, out=out, tta=tta, batch_size=batch_size, device=device, series_uid=series_uid,
        progress=not quiet, console=err_console,
    )  # fmt: skip
    if out is None:
        from rich.table import Table

        table = Table()
        for col in ("input", "label", "probability", "error"):
            table.add_column(col)
        for r in report.rows:
            prob = "" if r["probability"] is None else f"{r['probability']:.3f}"
            table.add_row(r["path"], r["label"] or "", prob, r["error"] or "")
        console.print(table)
    for s in report.skipped:
        err_console.print(f"[yellow]skipped:[/] {rich.markup.escape(s['path'])} ({s['reason']})", markup=True, highlight=False)
    n_err = len(report.errors)
    summary = f"{len(report.rows) - n_err} of {len(report.rows)} inputs predicted"
    if report.skipped:
        summary += f"; {len(report.skipped)} image files of other formats skipped"
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
    out: Optional[Path] = typer.Option(None, help="Output folder (default: a new <checkpoint folder>/inspect-activation/<date>-<time>/)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the report in an existing --out folder."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads; default: $OMP_NUM_THREADS, else the idle cores.", min=1
    ),
):
    """Plot what the SO(3) activations do and measure feature-level equivariance.

    EquiLoPO: per local activation the joint density of input and output values on SO(3) with the
    ReLU line, the error against exact ReLU and the adaptive-coefficient regimes; SoftMax against
    the sampled maximum. Every arch: feature-map montage for an input and its copy rotated by 90°
    about z, and the equivariance error per layer. Writes PNGs and inspect.json, prints tables.
    """
    _before_heavy_imports(threads, checkpoint=checkpoint)
    from volrot.inspection import inspect_checkpoint, print_report

    report, paths = inspect_checkpoint(
        checkpoint, data=data, root=root, split=split, samples=samples, layer=layer, functions=functions,
        grid_deg=grid_deg, seed=seed, device=device, out=out, force=force,
    )  # fmt: skip
    print_report(report, console)
    console.print(f"wrote {len(paths)} files to {paths['inspect.json'].parent} in {report.meta['elapsed_s']:.1f} s")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot study shapes-quick                       # shipped study: every arch on shapes, CPU-sized\n\n"
        "  volrot study my-study.yaml --out runs/my-study\n\n"
        "  CUDA_VISIBLE_DEVICES=1 volrot study organ-paper --shard 1/4   # one of 4 parallel shards\n\n"
        "  volrot study my-study.yaml --report-only         # table and figures of the finished cells"
    )
)
@user_errors
def study(
    study_file: Path = typer.Argument(..., help="Study YAML file, a study folder, or the name of a shipped study (e.g. shapes-quick)."),
    out: Optional[Path] = typer.Option(None, help="Study folder (default: runs/study-<name>)."),
    set_: List[str] = typer.Option(
        [], "--set", help="Override a study key: data|eval|optim|train.KEY=VALUE, e.g. data.root=DIR (repeatable)."
    ),
    shard: Optional[str] = typer.Option(None, help="Run only shard i of N (i/N, 0-based): cells whose index is i mod N."),
    report_only: bool = typer.Option(False, "--report-only", help="Train nothing: report the finished cells."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads; default: $OMP_NUM_THREADS, else the idle cores.", min=1
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Train every (model, seed) cell of a study, evaluate it under rotation, and report.

    Each cell is an ordinary run folder in the study folder; finished cells are skipped and an
    interrupted one resumes. Writes study.md/csv/json/html and figures, prints the table.
    """
    import time

    _before_heavy_imports(threads)
    from volrot.study import load_study, run_study
    from volrot.study.cells import parse_shard
    from volrot.study.report import print_table

    started = time.perf_counter()
    spec = load_study(study_file, set_)
    if out is None and study_file.is_dir():  # `volrot study runs/study-x`: that study folder
        out = study_file
    run = run_study(spec, out, shard=parse_shard(shard), report_only=report_only, progress=not quiet, console=console)
    if run.report is None or not run.report.models:
        console.print(f"no finished cells yet in {run.study_dir}")
        return
    print_table(run.report, console)
    console.print(
        f"study folder: {run.study_dir}  ({len(run.report.cells)} of {len(run.cells)} cells finished; "
        f"this call {time.perf_counter() - started:.0f} s)",
        highlight=False,
        soft_wrap=True,
    )


@app.command(
    epilog=(
        "Examples:\n\n"
        "  volrot compare runs/*                            # every run folder with an eval-rotated report\n\n"
        "  volrot compare runs/a/eval-rotated/report.json runs/b --out cmp/"
    )
)
@user_errors
def compare(
    paths: List[Path] = typer.Argument(..., help="Run folders (with eval-rotated/report.json), report.json files or study folders."),
    out: Path = typer.Option(Path("compare"), help="Folder for study.md/csv/json/html and the figures."),
):
    """The study table and figures of existing runs, without training anything."""
    from volrot.study import compare as run_compare
    from volrot.study.report import print_table

    res, paths_written = run_compare(paths, out)
    print_table(res, console)
    console.print(f"wrote {', '.join(paths_written)} to {out}", highlight=False, soft_wrap=True)


for _info in app.registered_commands:  # every command, including ones added above later
    if _info.cls in (None, typer.core.TyperCommand):
        _info.cls = _Command


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
