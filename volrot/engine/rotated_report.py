"""Writing a `RotatedReport`: report.json, report.csv, report.png and a rich terminal table.

- `report.json`: `RotatedReport.to_dict()` — `meta`, `reference` (unrotated ACC/AUC),
  `protocols` (per protocol summary and details), `rows` (per rotation). NaN is written as null.
- `report.csv`: one line per rotation with the columns `ROW_FIELDS`, preceded by the unrotated
  reference (protocol `reference`).
- `report.png`: ACC (top) and AUC (bottom) against rotation angle, one column per protocol:
  per axis for `axes`, per rotation angle for `octahedral`, binned angle (mean ± std per 30° bin)
  for `so3-grid` and `haar`; the unrotated reference is a solid grey line and the interpolation
  control (identity through the trilinear path) a dashed purple one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from volrot.engine.rotated import CONTROL, ROW_FIELDS, RotatedReport

REPORT_FILES = ("report.json", "report.csv", "report.png")


def load_report(path: str | Path) -> RotatedReport:
    """Read a report.json back (for re-plotting or comparing runs)."""
    return RotatedReport.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def write_report(report: RotatedReport, out_dir: str | Path) -> dict[str, Path]:
    """Write the three report files into `out_dir` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in REPORT_FILES}
    paths["report.json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    write_csv(report, paths["report.csv"])
    plot_report(report, paths["report.png"])
    return paths


def write_csv(report: RotatedReport, path: str | Path) -> None:
    ref = {k: "" for k in ROW_FIELDS}
    ref.update(protocol="reference", index=0, label="unrotated", method="none", angle_deg=0.0,
               rx_deg=0.0, ry_deg=0.0, rz_deg=0.0, acc=report.reference["acc"], auc=report.reference["auc"],
               consistency=1.0, max_abs_dlogit=0.0, mean_abs_dlogit=0.0, rel_dlogit=0.0)  # fmt: skip
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_FIELDS))
        writer.writeheader()
        for row in [ref, *report.rows]:
            writer.writerow({k: _csv_value(row.get(k)) for k in ROW_FIELDS})


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6g}"
    return v


def plot_report(report: RotatedReport, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = [p for p in report.protocols if p != CONTROL]
    cols = max(1, len(protos))
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 6.4), squeeze=False, sharey="row")
    control = report.rows_of(CONTROL)[:1]
    for c, name in enumerate(protos):
        rows = report.rows_of(name)
        for r, metric in enumerate(("acc", "auc")):
            ax = axes[r, c]
            _plot_protocol(ax, name, rows, metric)
            ref = report.reference.get(metric)
            if ref is not None and np.isfinite(ref):
                ax.axhline(ref, color="0.4", lw=1.2, label="unrotated")
            if control and np.isfinite(control[0][metric]):
                ax.axhline(control[0][metric], color="tab:purple", lw=1.0, ls="--", label="identity (trilinear)")
            ax.set_ylabel(metric.upper()) if c == 0 else None
            ax.grid(alpha=0.3)
            if r == 0:
                details = report.protocols[name]["details"]
                ax.set_title(f"{name} ({details.get('count', len(rows))} rotations)")
            ax.set_xlabel("rotation angle (deg)")
            if c == 0 and r == 0 or name == "axes" and r == 0:
                ax.legend(fontsize=7, loc="best", framealpha=0.6)
    meta = report.meta
    fig.suptitle(f"rotated evaluation — {meta.get('model', 'model')} on {meta.get('data', 'data')} "
                 f"({meta['n_samples']} samples, mask={meta['mask']})", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_protocol(ax, name: str, rows: list[dict], metric: str) -> None:
    if name == "axes":
        for axis, colour in zip("xyz", ("tab:red", "tab:green", "tab:blue")):
            sel = [r for r in rows if r["axis"] == axis]
            ang = [r["angle_deg"] for r in sel] + [360.0]
            val = [r[metric] for r in sel] + [sel[0][metric]]  # 360° is 0° again
            ax.plot(ang, val, "o-", ms=3, color=colour, label=f"about {axis}")
        ax.set_xticks(range(0, 361, 90))
        return
    ang = np.array([r["angle_deg"] for r in rows])
    val = np.array([r[metric] for r in rows], dtype=np.float64)
    ax.plot(ang, val, ".", color="tab:blue", alpha=0.35, ms=4, label="per rotation")
    if name != "octahedral":
        edges = np.arange(0, 181, 30)
        which = np.clip(np.digitize(ang, edges) - 1, 0, len(edges) - 2)
        mids, means, stds = [], [], []
        for b in range(len(edges) - 1):
            v = val[(which == b) & np.isfinite(val)]
            if len(v):
                mids.append((edges[b] + edges[b + 1]) / 2)
                means.append(v.mean())
                stds.append(v.std())
        ax.errorbar(mids, means, yerr=stds, fmt="s-", color="tab:orange", ms=4, capsize=3, label="30° bin mean ± std")
    ax.set_xticks(range(0, 181, 30))


def render_table(report: RotatedReport):
    """A rich `Table`: one line per protocol plus the reference and the interpolation control;
    the protocol details are in the caption."""
    from rich import box
    from rich.table import Table

    meta = report.meta
    caption = "agree: fraction of predictions equal to the unrotated one; max|Δ|: largest logit change; "
    caption += "rel: max|Δ| / max|logit|. " + "; ".join(f"{name}: {_details(name, s['details'])}" for name, s in report.protocols.items())
    table = Table(
        title=f"Rotated evaluation: {meta['n_samples']} samples, mask={meta['mask']}, seed={meta['seed']}",
        caption=caption,
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("protocol", "n", "ACC", "worst", "AUC", "worst", "agree", "max|Δ|", "rel"):
        table.add_column(col, justify="left" if col == "protocol" else "right")
    ref = report.reference
    table.add_row("unrotated", "1", _f(ref["acc"]), "", _f(ref["auc"]), "", "", "", "")
    for name, s in report.protocols.items():
        table.add_row(
            name,
            str(s["count"]),
            f"{_f(s['acc_mean'])}±{_f(s['acc_std'], '.2f')}",
            _f(s["acc_worst"]),
            f"{_f(s['auc_mean'])}±{_f(s['auc_std'], '.2f')}",
            _f(s["auc_worst"]),
            _f(s["consistency_mean"]),
            _f(s["max_abs_dlogit"], ".1e"),
            _f(s["rel_dlogit"], ".1e"),
        )
    return table


def print_report(report: RotatedReport, console=None) -> None:
    from rich.console import Console

    (console or Console()).print(render_table(report))


def _details(name: str, d: dict) -> str:
    if name == "axes":
        return f"step {d['step_deg']:g}°, {d['per_axis']} per axis"
    if name == "so3-grid":
        return f"spacing {d['spacing_deg']:.1f}° (target {d['target_spacing_deg']:g}°), covering {d['covering_radius_deg']:.1f}°"
    if name == "haar":
        return f"seed {d['seed']}"
    if name == "octahedral":
        return "exact (no interpolation)"
    if name == CONTROL:
        return "identity + 3 round trips R·Rᵀ (trilinear)"
    return ""


def _f(v, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return format(v, fmt)
