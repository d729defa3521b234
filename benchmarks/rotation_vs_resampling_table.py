"""The markdown table of docs/rotation-vs-resampling.md from run folders evaluated twice:

    volrot eval-rotated RUN/best.safetensors -p haar -p rendered [-p octahedral] --n 16 \
        --max-samples 64 --resample trilinear --out RUN/eval-trilinear
    volrot eval-rotated RUN/best.safetensors -p haar --n 16 --max-samples 64 \
        --resample spline3 --out RUN/eval-spline3
    python benchmarks/rotation_vs_resampling_table.py RUN [RUN ...]

Columns (ACC, mean over rotations; agreement with the unrotated prediction in brackets):
unrotated; the interpolation control per path (identity through the path, and the mean of the
3 round trips R·Rᵀ); `rendered` (the Haar rotations rendered in the pose: rotation only);
`haar` per path (rotation + one resampling); `octahedral` (exact) when evaluated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _rows(rep: dict, protocol: str, method: str | None = None) -> list[dict]:
    return [r for r in rep["rows"] if r["protocol"] == protocol and (method is None or r["method"] == method)]


def _cell(rows: list[dict]) -> str:
    if not rows:
        return "—"
    acc = np.mean([r["acc"] for r in rows])
    agree = np.mean([r["consistency"] for r in rows])
    return f"{acc:.3f} ({agree:.2f})"


def row(run: Path) -> list[str]:
    tri = _load(run / "eval-trilinear" / "report.json")
    spl = _load(run / "eval-spline3" / "report.json")
    recipe = (run / "recipe.yaml").read_text(encoding="utf-8")
    import yaml

    r = yaml.safe_load(recipe)
    arch = r["model"]["arch"]
    opts = ", ".join(f"{k} {v}" for k, v in r["model"].items() if k != "arch")
    cells = [f"{arch} ({opts}), {r['train']['epochs']} ep", r["train"]["augment"], f"{tri['reference']['acc']:.3f}"]
    for rep, path in ((tri, "trilinear"), (spl, "spline3")):
        cells.append(_cell(_rows(rep, "control", path)) if rep else "—")
        cells.append(_cell(_rows(rep, "control", "round-trip")) if rep else "—")
    cells.append(_cell(_rows(tri, "rendered")))
    cells.append(_cell(_rows(tri, "haar")))
    cells.append(_cell(_rows(spl, "haar")) if spl else "—")
    cells.append(_cell(_rows(tri, "octahedral")))
    return cells


HEADER = [
    "model", "augment", "unrotated", "identity tri", "R·Rᵀ tri", "identity spline3", "R·Rᵀ spline3",
    "rendered (rotation only)", "haar tri", "haar spline3", "octahedral (exact)",
]  # fmt: skip


def main(argv=None) -> int:
    runs = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for run in runs:
        print("| " + " | ".join(row(run)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
