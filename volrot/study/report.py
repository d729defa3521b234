"""The study report: study.md, study.csv, study.json, the two figures and study.html, plus the
rich table printed by `volrot study` and `volrot compare`.

Columns (one row per model; every number is mean ± std across seeds, see `results`):
params, training time (s), unrotated ACC/AUC, then per protocol ACC/AUC (each seed's mean
over that protocol's rotations), the interpolation control, the worst single rotation's ACC,
prediction consistency under the headline protocol (Haar when evaluated), and the logit
invariance error on the 24 cube rotations (max|Δlogit| / max|logit|, largest over seeds).

`study.csv` has the same rows with separate mean / std columns; `study.json` holds the table,
every cell's own numbers (with its run folder, training and evaluation time, worst rotation)
and the θ-binned curves of the figure.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from volrot.engine.rotated import CONTROL
from volrot.fileio import atomic_write, atomic_write_text
from volrot.study.figures import METRICS, angle_curves, plot_angle, plot_rotated
from volrot.study.results import ModelResult, StudyResults

FIGURES = ("study-angle.png", "study-rotated.png")
FILES = ("study.md", "study.csv", "study.json", *FIGURES, "study.html")


def columns(res: StudyResults) -> list[tuple[str, str, str]]:
    """(key, header, format) of the table's number columns."""
    cols = [("parameters", "params", "int"), ("train_seconds", "train s", "s"),
            ("unrotated_acc", "unrotated ACC", "f"), ("unrotated_auc", "unrotated AUC", "f")]  # fmt: skip
    for p in res.protocols:
        name = "control (R·Rᵀ)" if p == CONTROL else p
        cols += [(f"{p}_acc", f"{name} ACC", "f"), (f"{p}_auc", f"{name} AUC", "f")]
    if any(p != CONTROL for p in res.protocols):
        cols.append(("worst_acc", "worst rotation ACC", "f"))
    if res.headline:
        cols.append(("consistency", f"agree ({res.headline})", "f"))
    if "octahedral" in res.protocols:
        cols.append(("invariance_error_24", "logit err. (24)", "e"))
    return cols


def cell_text(m: ModelResult, key: str, fmt: str, sep: str = " ± ") -> str:
    s = m.stat(key)
    if s["mean"] is None:
        return "n/a"
    if fmt == "int":
        return f"{int(round(s['mean'])):,}"
    if fmt == "s":
        return f"{s['mean']:.0f}" + (f"{sep}{s['std']:.0f}" if s["n"] > 1 else "")
    if fmt == "e":
        return f"{s['max']:.1e}"  # the worst seed: an invariance error is a bound
    return f"{s['mean']:.3f}" + (f"{sep}{s['std']:.3f}" if s["n"] > 1 else "")


def table_rows(res: StudyResults, sep: str = " ± ") -> tuple[list[str], list[list[str]]]:
    cols = columns(res)
    header = ["model", "arch", "seeds", *[h for _, h, _ in cols]]
    rows = []
    for m in res.models:
        rows.append([m.model, str(m.arch or "?"), str(len(m.cells)), *[cell_text(m, k, f, sep) for k, _, f in cols]])
    return header, rows


def caption(res: StudyResults) -> str:
    parts = [
        "Mean ± std (n − 1) across seeds of each seed's value; a protocol's value is that seed's mean over its rotations.",
        "worst rotation: the lowest ACC of any single rotation (control excluded).",
    ]
    if res.headline:
        parts.append(f"agree: fraction of predictions unchanged by a {res.headline} rotation.")
    if "octahedral" in res.protocols:
        parts.append("logit err. (24): max|Δlogit| / max|logit| over the 24 cube rotations (largest over seeds).")
    if CONTROL in res.protocols:
        parts.append("control: the identity and 3 round trips R then Rᵀ through the same resampling (net rotation none).")
    parts.append(f"Chance ACC {1 / res.num_classes:.3f}, AUC 0.5.")
    return " ".join(parts)


def render_table(res: StudyResults):
    """The terminal table: one row per model, ACC above AUC in each rotation column."""
    from rich import box
    from rich.table import Table

    t = Table(title=_title_line(res), caption=caption(res), box=box.SIMPLE_HEAD, padding=(0, 1),
              pad_edge=False, collapse_padding=True, caption_justify="left")  # fmt: skip
    t.add_column("model", justify="left")
    t.add_column("params", justify="right")
    t.add_column("train s", justify="right")
    pairs = [("unrotated", "unrotated")] + [(p, "control" if p == CONTROL else p) for p in res.protocols]
    for _, head in pairs:
        t.add_column(f"{head}\nACC / AUC", justify="right")
    single = [(k, h, f) for k, h, f in columns(res) if k in ("worst_acc", "consistency", "invariance_error_24")]
    for _, head, _ in single:
        t.add_column(head.replace(" rotation ACC", "\nrotation ACC").replace(" (", "\n("), justify="right")
    for m in res.models:
        row = [f"{m.model}\n[dim]{m.arch}, {len(m.cells)} seed{'s' if len(m.cells) != 1 else ''}[/]",
               cell_text(m, "parameters", "int"), cell_text(m, "train_seconds", "s", "±")]  # fmt: skip
        for key, _ in pairs:
            row.append(f"{_short(m, f'{key}_acc')}\n{_short(m, f'{key}_auc')}")
        row += [_short(m, k) if f == "f" else cell_text(m, k, f) for k, _, f in single]
        t.add_row(*row)
    return t


def _short(m: ModelResult, key: str) -> str:
    """0.912±.013 (the std without its leading zero keeps the column narrow)."""
    s = m.stat(key)
    if s["mean"] is None:
        return "n/a"
    if s["n"] < 2:
        return f"{s['mean']:.3f}"
    std = f"{s['std']:.3f}"
    return f"{s['mean']:.3f}±{std[1:] if std.startswith('0.') else std}"


def print_table(res: StudyResults, console=None) -> None:
    from rich.console import Console

    console = console or Console()
    table = render_table(res)
    # a log file or pipe gets the whole table, not one folded to 80 columns
    if console.is_terminal:
        console.print(table)
    else:
        from rich.measure import Measurement

        old = console.width
        console.width = max(old, Measurement.get(console, console.options.update(max_width=400), table).maximum)
        try:
            console.print(table)
        finally:
            console.width = old
    for note in res.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


def _title_line(res: StudyResults) -> str:
    cells = len(res.cells)
    done = f"{cells} of {res.expected_cells} cells" if res.expected_cells is not None else f"{cells} runs"
    settings = res.cells[0].eval_settings() if res.cells else {}
    data = settings.get("data") or "?"
    return f"{res.title}: {data}, {settings.get('n_samples', '?')} test volumes, {done}"


def study_json(res: StudyResults) -> dict[str, Any]:
    cols = columns(res)
    models = []
    for m in res.models:
        entry = {"model": m.model, "arch": m.arch, "seeds": m.seeds}
        entry.update({k: m.stat(k) for k, _, _ in cols})
        entry["test_acc"] = m.stat("test_acc")
        entry["test_auc"] = m.stat("test_auc")
        entry["eval_seconds"] = m.stat("eval_seconds")
        models.append(entry)
    cells = []
    for c in res.cells:
        cells.append({
            "model": c.model, "seed": c.seed, "arch": c.arch,
            "run_dir": str(c.run_dir) if c.run_dir else None, "report": str(c.report_path),
            "run_name": c.metrics.get("run_name"), "epochs": c.metrics.get("epochs"),
            "values": c.values(), "worst_rotation": c.worst_rotation(), "eval_settings": c.eval_settings(),
        })  # fmt: skip
    curves = {
        p: {metric: angle_curves(res, p, metric) for metric, _ in METRICS} for p in res.protocols if p != CONTROL
    }
    return _json_safe({
        "title": res.title, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "expected_cells": res.expected_cells, "finished_cells": len(res.cells), "info": res.info,
        "protocols": res.protocols, "headline_protocol": res.headline, "num_classes": res.num_classes,
        "columns": [{"key": k, "header": h} for k, h, _ in cols], "models": models, "cells": cells,
        "angle_curves": curves, "notes": res.notes,
    })  # fmt: skip


def write_csv(res: StudyResults, path: Path) -> None:
    keys = [k for k, _, _ in columns(res)] + ["test_acc", "test_auc", "eval_seconds"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "arch", "seeds", *[f"{k}_{s}" for k in keys for s in ("mean", "std")]])
    for m in res.models:
        row = [m.model, m.arch, " ".join(str(s) for s in m.seeds)]
        for k in keys:
            s = m.stat(k)
            row += ["" if s["mean"] is None else f"{s['mean']:.6g}", "" if s["std"] is None else f"{s['std']:.6g}"]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def markdown_table(res: StudyResults) -> str:
    header, rows = table_rows(res)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cells_table(res: StudyResults) -> tuple[list[str], list[list[str]]]:
    header = ["model", "seed", "run folder", "best epoch", "train s", "eval s", "test ACC", "test AUC"]
    rows = []
    for c in res.cells:
        v = c.values()
        rows.append([
            c.model, str(c.seed), str(c.run_dir.name if c.run_dir else c.report_path),
            _fmt(v["best_epoch"], "d"), _fmt(v["train_seconds"], ".0f"), _fmt(v["eval_seconds"], ".0f"),
            _fmt(v["test_acc"], ".3f"), _fmt(v["test_auc"], ".3f"),
        ])  # fmt: skip
    return header, rows


def _fmt(v, spec: str) -> str:
    if v is None:
        return "n/a"
    return format(int(v) if spec == "d" else v, spec)


def _settings_text(res: StudyResults) -> list[str]:
    lines = []
    info = res.info
    if info.get("description"):
        lines.append(str(info["description"]).strip())
    if info.get("data"):
        lines.append(f"data: {json.dumps(info['data'])}")
    if "eval" in info:
        lines.append(f"eval: {json.dumps(info['eval'], default=str)}")
    if info.get("seeds"):
        lines.append(f"seeds: {info['seeds']}")
    if res.cells:
        s = res.cells[0].eval_settings()
        lines.append(
            f"evaluated: {s.get('n_samples')} {s.get('split')} volumes of {s.get('data')}, protocols "
            f"{', '.join(s.get('protocols') or [])}, mask {s.get('mask')}, Haar n {s.get('n')} (seed {s.get('seed')}), "
            f"angles {s.get('angles_deg')}°"
        )
    return lines


def write_markdown(res: StudyResults, path: Path) -> None:
    out = [f"# {res.title}", ""]
    out += [f"- {line}" for line in _settings_text(res)]
    out += ["", markdown_table(res), "", caption(res), ""]
    for note in res.notes:
        out.append(f"> note: {note}")
    out += ["", "![ACC and AUC against rotation angle](study-angle.png)", "",
            "![unrotated vs rotated per model](study-rotated.png)", "", "## Cells", ""]  # fmt: skip
    header, rows = cells_table(res)
    out += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    atomic_write_text(path, "\n".join(out) + "\n")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}p.caption{font-size:12px;color:#555;max-width:1100px}
.note{background:#fff6d6;padding:.4em .8em;border-left:4px solid #e0b100}code{background:#f3f3f3;padding:0 .2em}
"""


def _html_table(header: list[str], rows: list[list[str]], text_cols: int) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in header)
    body = []
    for r in rows:
        cells = "".join(
            f"<td>{html.escape(x)}</td>" if i < text_cols else f'<td class="num">{html.escape(x)}</td>'
            for i, x in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html(res: StudyResults, path: Path, figures: dict[str, Path]) -> None:
    """One self-contained page: tables, notes and the figures embedded as base64 PNG."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(res.title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(res.title)}</h1><ul>"]  # fmt: skip
    parts += [f"<li>{html.escape(line)}</li>" for line in _settings_text(res)]
    parts.append("</ul>")
    header, rows = table_rows(res)
    parts.append(_html_table(header, rows, 2))
    parts.append(f"<p class='caption'>{html.escape(caption(res))}</p>")
    parts += [f"<p class='note'>note: {html.escape(n)}</p>" for n in res.notes]
    for name, p in figures.items():
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'></figure>")
    parts.append("<h2>Cells</h2>")
    header, rows = cells_table(res)
    parts.append(_html_table(header, rows, 3))
    parts.append(f"<p class='caption'>volrot {html.escape(_version())}, written "
                 f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p></body></html>")  # fmt: skip
    atomic_write_text(path, "".join(parts) + "\n")


def _version() -> str:
    import volrot

    return volrot.__version__


def write_study_report(res: StudyResults, out_dir: str | Path) -> dict[str, Path]:
    """Write every report file into `out_dir`; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    atomic_write_text(paths["study.json"], json.dumps(study_json(res), indent=2) + "\n")
    write_csv(res, paths["study.csv"])
    atomic_write(paths["study-angle.png"], lambda tmp: plot_angle(res, tmp), suffix=".png")
    atomic_write(paths["study-rotated.png"], lambda tmp: plot_rotated(res, tmp), suffix=".png")
    write_markdown(res, paths["study.md"])
    write_html(res, paths["study.html"], {name: paths[name] for name in FIGURES})
    return paths


def _json_safe(obj):
    import math

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    try:
        import numpy as np

        if isinstance(obj, np.floating):
            return _json_safe(float(obj))
        if isinstance(obj, np.integer):
            return int(obj)
    except ImportError:  # pragma: no cover
        pass
    return obj
