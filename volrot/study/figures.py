"""The study figures (matplotlib, Agg).

- `study-angle.png`: ACC (top row) and AUC (bottom row) against the rotation angle θ, one column
  per rotated protocol, one curve per model. θ is binned (30° bins, plotted at their centres;
  the octahedral protocol at its own angles 90°, 120°, 180°) and θ = 0 is the unrotated
  reference. A curve is the mean over seeds of each seed's bin mean; the band spans the seeds
  (lowest to highest seed). Chance (1/K for ACC, 0.5 for AUC) is the dashed grey line.
- `study-rotated.png`: per model, bars of unrotated and per-protocol ACC / AUC (mean over seeds,
  whiskers: lowest and highest seed), the interpolation control hatched, chance dashed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volrot.engine.rotated import CONTROL
from volrot.study.results import StudyResults

BIN_DEG = 30.0
METRICS = (("acc", "ACC"), ("auc", "AUC"))


def angle_curves(res: StudyResults, protocol: str, metric: str) -> dict[str, dict[str, list]]:
    """Per model: bin centres `x` (θ = 0 first, the unrotated reference) and per-seed values
    `seeds` (list over seeds of lists over bins; NaN where a seed has no rotation in a bin)."""
    out = {}
    for m in res.models:
        per_seed, centres = [], None
        for c in m.cells:
            rows = c.report.rows_of(protocol)
            if not rows:
                continue
            ang = np.array([r["angle_deg"] for r in rows], dtype=np.float64)
            val = np.array([r[metric] for r in rows], dtype=np.float64)
            if protocol == "octahedral":
                keys = np.round(ang, 3)
                x = sorted(set(keys[keys > 0].tolist()))
                ys = [float(np.nanmean(val[keys == k])) if np.any(keys == k) else np.nan for k in x]
            else:
                edges = np.arange(0.0, 180.0 + BIN_DEG, BIN_DEG)
                which = np.clip(np.digitize(ang, edges) - 1, 0, len(edges) - 2)
                x = list((edges[:-1] + edges[1:]) / 2)
                ys = []
                for b in range(len(x)):
                    v = val[(which == b) & np.isfinite(val)]
                    ys.append(float(v.mean()) if len(v) else np.nan)
            ref = c.report.reference.get(metric)
            centres = [0.0, *x]
            per_seed.append([np.nan if ref is None else float(ref), *ys])
        if per_seed:
            width = max(len(s) for s in per_seed)
            per_seed = [s + [np.nan] * (width - len(s)) for s in per_seed]
            out[m.model] = {"x": centres, "seeds": per_seed}
    return out


def plot_angle(res: StudyResults, path: str | Path) -> None:
    plt = _pyplot()
    protos = [p for p in res.protocols if p != CONTROL]
    cols = max(1, len(protos))
    fig, axes = plt.subplots(2, cols, figsize=(4.6 * cols + 0.8, 7.0), squeeze=False, sharey="row")
    colours = _colours(len(res.models))
    chance = {"acc": 1.0 / res.num_classes, "auc": 0.5}
    for c, proto in enumerate(protos):
        for r, (metric, label) in enumerate(METRICS):
            ax = axes[r, c]
            curves = angle_curves(res, proto, metric)
            for k, m in enumerate(res.models):
                if m.model not in curves:
                    continue
                x = np.asarray(curves[m.model]["x"])
                ys = np.asarray(curves[m.model]["seeds"], dtype=np.float64)
                ok = np.isfinite(ys).any(axis=0)
                mean = np.nanmean(ys[:, ok], axis=0)
                ax.plot(x[ok], mean, "o-", ms=3.5, lw=1.6, color=colours[k], label=m.model)
                if len(ys) > 1:
                    ax.fill_between(x[ok], np.nanmin(ys[:, ok], axis=0), np.nanmax(ys[:, ok], axis=0),
                                    color=colours[k], alpha=0.18, lw=0)  # fmt: skip
            ax.axhline(chance[metric], color="0.45", ls="--", lw=1.0, label="chance")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(-5, 185)
            ax.set_xticks(range(0, 181, 30))
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(label)
            if r == 0:
                ax.set_title(f"{proto}" + (" (exact)" if proto == "octahedral" else f" ({BIN_DEG:g}° bins)"), fontsize=10)
            else:
                ax.set_xlabel("rotation angle θ (deg); 0 = unrotated")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    ncol = min(len(labels), 7)
    rows = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="lower center", fontsize=8, frameon=False, ncol=ncol)
    seeds = sorted({len(m.cells) for m in res.models})
    fig.suptitle(f"{res.title}: accuracy against rotation angle (mean over seeds, band: seed range; "
                 f"{'/'.join(map(str, seeds))} seeds per model)", fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.035 * rows + 0.01, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rotated(res: StudyResults, path: str | Path) -> None:
    plt = _pyplot()
    groups = ["unrotated", *res.protocols]
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.3 * len(res.models) * (len(groups) + 1) + 1.5), 7.0), squeeze=False)
    colours = _colours(len(groups), cmap="Set2")
    chance = {"acc": 1.0 / res.num_classes, "auc": 0.5}
    width = 0.8 / len(groups)
    x = np.arange(len(res.models))
    for r, (metric, label) in enumerate(METRICS):
        ax = axes[r, 0]
        for g, name in enumerate(groups):
            key = f"unrotated_{metric}" if name == "unrotated" else f"{name}_{metric}"
            stats = [m.stat(key) for m in res.models]
            mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats])
            lo = np.array([np.nan if s["min"] is None else s["min"] for s in stats])
            hi = np.array([np.nan if s["max"] is None else s["max"] for s in stats])
            pos = x - 0.4 + width * (g + 0.5)
            ax.bar(pos, mean, width, color=colours[g], label=name, hatch="//" if name == CONTROL else None,
                   edgecolor="0.3", lw=0.5)  # fmt: skip
            err = np.vstack([mean - lo, hi - mean])
            ax.errorbar(pos, mean, yerr=np.where(np.isfinite(err), err, 0), fmt="none", ecolor="0.2", lw=0.8, capsize=2)
        ax.axhline(chance[metric], color="0.45", ls="--", lw=1.0, label="chance")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(label)
        ax.set_xticks(x)
        ax.set_xticklabels([m.model for m in res.models], rotation=20, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=8, frameon=False, ncol=min(len(labels), 7))
    fig.suptitle(f"{res.title}: unrotated vs rotated (mean over seeds; whiskers: lowest and highest seed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(n: int, cmap: str = "tab10"):
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    return [cm(i % cm.N) for i in range(n)]
