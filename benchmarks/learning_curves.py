"""Learning curves (train loss, val ACC/AUC per epoch) of several archs on one dataset.

Each run is `volrot.engine.train.train` on a recipe built like `volrot train` builds it
(`volrot.config.build_recipe`: shipped pair recipe < --recipe < flags < --set), so a curve is
exactly what the same `volrot train` command prints. Results are merged into one JSON per
dataset (benchmarks/results/learning_curves_<data>.json; a run of the same label is replaced),
and `--plot` draws every dataset found there into one figure.

    OMP_NUM_THREADS=1 python benchmarks/learning_curves.py --data shapes --size 16 \
        --max-samples 256 --epochs 6 --batch-size 16 \
        --run resnet3d "resnet3d --set model.width=8" \
        --run equilopo "equilopo --recipe equilopo_shapes"
    python benchmarks/learning_curves.py --plot docs/img/learning_curves.png

`--run LABEL "ARCH [--recipe NAME] [--lr X] [--epochs N] [--set KEY=VALUE ...]"`: the shared
flags (--data, --size, --max-samples, --epochs, --batch-size, --lr, --root) apply to every run
unless the run sets its own. Wall time per epoch is recorded; on a shared machine compare runs
of the same invocation only (ratios), not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's volrot

import torch  # noqa: E402

from volrot.config import build_recipe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_run(spec: str) -> dict:
    """`ARCH [--recipe NAME] [--lr X] [--epochs N] [--batch-size B] [--set K=V ...]`."""
    words = shlex.split(spec)
    out: dict = {"arch": words[0], "sets": [], "recipe": None, "flags": {}}
    it = iter(words[1:])
    for w in it:
        if w == "--set":
            out["sets"].append(next(it))
        elif w == "--recipe":
            out["recipe"] = next(it)
        elif w in ("--lr", "--epochs", "--batch-size"):
            key = w[2:].replace("-", "_")
            out["flags"][key] = float(next(it)) if key == "lr" else int(next(it))
        else:
            raise SystemExit(f"unknown word in run spec: {w!r}")
    return out


def run_one(label: str, spec: dict, args, out_dir: Path) -> dict:
    flags = {
        "arch": spec["arch"],
        "data": args.data,
        "root": args.root,
        "size": args.size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": "cpu",
        "out": str(out_dir),
        "name": label,
        "augment": "none",
    }
    flags.update(spec["flags"])
    sets = list(spec["sets"])
    if args.max_samples:
        sets.append(f"data.max_samples={args.max_samples}")
    recipe = build_recipe(spec["recipe"], flags, sets)
    from volrot.engine.train import train

    t0 = time.perf_counter()
    result = train(recipe, progress=True)
    wall = time.perf_counter() - t0
    epochs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return {
        "label": label,
        "command": spec["command"],
        "recipe": recipe.to_dict(),
        "parameters": sum(p.numel() for p in _model_params(result.best_checkpoint)),
        "epochs": epochs,
        "final": result.metrics,
        "wall_seconds": round(wall, 1),
    }


def record_run_dir(label: str, run_dir: Path, command: str) -> dict:
    """A run folder written by `volrot train` (finished or stopped early) as a curve record:
    its recipe, its per-epoch metrics.jsonl and, when it finished, metrics.json."""
    from volrot.config import load_recipe_file, recipe_from_dict

    recipe = recipe_from_dict(load_recipe_file(run_dir / "recipe.yaml"), str(run_dir / "recipe.yaml"))
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    final_file = run_dir / "metrics.json"
    return {
        "label": label,
        "command": command,
        "recipe": recipe.to_dict(),
        "epochs": epochs,
        "final": json.loads(final_file.read_text(encoding="utf-8")) if final_file.is_file() else None,
        "stopped_after_epoch": None if final_file.is_file() else len(epochs),
        "wall_seconds": round(sum(e["seconds"] for e in epochs), 1),
    }


def _model_params(checkpoint: Path):
    from volrot.artifacts.checkpoint import load_checkpoint

    return list(load_checkpoint(checkpoint)[0].parameters())


def results_path(data: str) -> Path:
    return RESULTS / f"learning_curves_{data}.json"


def plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(RESULTS.glob("learning_curves_*.json"))
    datasets = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13, 3.4 * len(datasets)), squeeze=False)
    labels = sorted({label for d in datasets for label in d["runs"]})
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    for row, d in zip(axes, datasets):
        for run in sorted(d["runs"].values(), key=lambda r: r["label"]):
            ep = [e["epoch"] for e in run["epochs"]]
            style = {"marker": "o", "ms": 3, "color": colours[run["label"]], "lw": 2.2 if run["recipe"]["model"]["arch"] == "equilopo" else 1.2}
            name = run["label"] + (f" (stopped after {run['stopped_after_epoch']})" if run.get("stopped_after_epoch") else "")
            row[0].plot(ep, [e["train_loss"] for e in run["epochs"]], label=name, **style)
            row[1].plot(ep, [e["val_acc"] for e in run["epochs"]], **style)
            row[2].plot(ep, [e["val_auc"] for e in run["epochs"]], **style)
        setup = d["setup"]
        title = f"{setup['data']} {setup['size']}³, ≤{setup['max_samples'] or 'all'} samples/split, batch {setup.get('batch_size')}"
        for ax, name in zip(row, ("train loss", "val ACC", "val AUC")):
            ax.set_title(f"{title}: {name}", fontsize=8)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--root", default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--run", nargs=2, action="append", default=[], metavar=("LABEL", "SPEC"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", type=Path, default=None, help="draw every results file into this figure")
    ap.add_argument("--record", nargs=3, action="append", default=[], metavar=("LABEL", "RUN_DIR", "COMMAND"),
                    help="add a run folder of `volrot train` (e.g. one stopped early for time) to --data's results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run:
        if not args.data:
            raise SystemExit("--data is required with --run")
        path = results_path(args.data)
        setup = {
            "data": args.data,
            "size": args.size,
            "max_samples": args.max_samples,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "threads": args.threads,
            "machine": platform.processor() or platform.machine(),
        }
        with tempfile.TemporaryDirectory() as tmp:
            for label, spec_text in args.run:
                spec = parse_run(spec_text)
                spec["command"] = " ".join(shlex.quote(a) for a in ["python", "benchmarks/learning_curves.py", *_shared(args), "--run", label, spec_text])
                print(f"== {label}: {spec_text}", flush=True)
                run = run_one(label, spec, args, Path(tmp))
                # read again just before writing: other invocations may have added runs meanwhile
                doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"runs": {}}
                doc["setup"] = setup
                doc["runs"][label] = run
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
                fin = doc["runs"][label]["final"]
                print(f"== {label}: test acc {fin['test']['acc']:.3f} auc {fin['test']['auc']:.3f}, {doc['runs'][label]['wall_seconds']} s", flush=True)
    for label, run_dir, command in args.record:
        path = results_path(args.data)
        doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"runs": {}, "setup": {"data": args.data}}
        doc["runs"][label] = record_run_dir(label, Path(run_dir), command)
        path.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        print(f"recorded {label} from {run_dir} ({len(doc['runs'][label]['epochs'])} epochs)")
    if args.plot:
        plot(args.plot)


def _shared(args) -> list[str]:
    out = []
    for flag in ("data", "root", "size", "max_samples", "epochs", "batch_size", "lr"):
        v = getattr(args, flag)
        if v is not None:
            out += [f"--{flag.replace('_', '-')}", str(v)]
    return out


if __name__ == "__main__":
    main()
