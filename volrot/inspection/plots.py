"""Figures of `volrot inspect-activation` (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volrot.inspection.activations import GateSamples, LocalActivationSamples, SoftMaxSamples
from volrot.inspection.equivariance import EquivarianceResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _limits(*arrays, q: float = 0.002) -> tuple[float, float]:
    v = np.concatenate([np.ravel(a) for a in arrays])
    lo, hi = np.quantile(v, q), np.quantile(v, 1 - q)
    pad = 0.05 * (hi - lo or 1.0)
    return float(lo - pad), float(hi + pad)


def plot_local_activation(s: LocalActivationSamples, path: Path) -> Path:
    """Joint density of input f(Q) and output σ(f)(Q) with the ReLU line (paper Fig. 3), and the
    distribution of μ/(3σ) with the adaptive regimes."""
    from matplotlib.colors import LogNorm

    plt = _plt()
    st = s.stats()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1.25, 1]})
    x, y = s.input_values.ravel(), s.output_values.ravel()
    xl, yl = _limits(x), _limits(y, np.maximum(x, 0))
    h = ax.hist2d(x, y, bins=160, range=[xl, yl], norm=LogNorm(), cmap="viridis")
    fig.colorbar(h[3], ax=ax, label="count (log)")
    t = np.linspace(*xl, 200)
    ax.plot(t, np.maximum(t, 0), "r--", lw=1.2, label="ReLU  y = max(x, 0)")
    ax.set_xlim(xl), ax.set_ylim(yl)
    ax.set_xlabel("input f(Q)")
    ax.set_ylabel("output σ(f)(Q)")
    trunc = "" if s.keep == 2 * s.lmax else f", kept degree {s.keep} < 2L"
    ax.set_title(
        f"{s.name}: L {s.lmax}→{s.keep}{trunc}, {s.coefficients}\n"
        f"{st['functions_sampled']} functions × {st['rotations']} rotations; "
        f"MSE {st['mse']:.3g}, wrong sign {100 * st['wrong_sign_fraction']:.1f}%",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    ratio = np.clip(s.mu / np.maximum(3 * s.sigma, 1e-12), -3, 3)
    ax2.hist(ratio, bins=120, range=(-3, 3), color="0.35")
    for b in (-1, 1):
        ax2.axvline(b, color="r", ls="--", lw=1)
    r = st["regimes"]
    ax2.set_title(
        f"input μ/(3σ) per function ({st['functions_total']} functions)\n"
        f"all-negative {100 * r['all_negative']:.1f}%  mixed {100 * r['mixed']:.1f}%  "
        f"all-positive {100 * r['all_positive']:.1f}%",
        fontsize=9,
    )
    ax2.set_xlabel("μ / (3σ)  (clipped to ±3; regimes split at ±1)")
    ax2.set_ylabel("functions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_softmax(s: SoftMaxSamples, path: Path, gates: GateSamples | None = None) -> Path:
    """SO(3) SoftMax against the sampled maximum (paper Fig. 2B); the gate histogram of a global
    activation when given."""
    plt = _plt()
    st = s.stats()
    ncols = 2 if gates is not None and len(gates.gates) else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.6 * ncols, 4.6), squeeze=False)
    ax = axes[0, 0]
    sc = ax.scatter(s.sampled_max, s.softmax, c=np.clip(s.mean_over_3std, -2, 2), s=6, cmap="coolwarm", alpha=0.7)
    fig.colorbar(sc, ax=ax, label="μ/(3σ) of the function (clipped ±2)")
    lo, hi = _limits(s.sampled_max, s.softmax)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)
    ax.set_xlim(lo, hi), ax.set_ylim(lo, hi)
    ax.set_xlabel("sampled max over rotations  max_k f(Q_k)")
    ax.set_ylabel("SO(3) SoftMax(f)")
    ax.set_title(
        f"{s.name} (L {s.lmax}): {st['functions_sampled']} functions\n"
        f"Pearson r (max > 0) {st['pearson_positive_max']:.3f}, |SoftMax| (max ≤ 0) {st['mean_abs_softmax_negative_max']:.3g}",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    if ncols == 2:
        ax = axes[0, 1]
        ax.hist(gates.gates, bins=60, range=(0, 1), color="0.35")
        gs = gates.stats()
        ax.set_xlabel("gate = ⟨out, in⟩ / ⟨in, in⟩")
        ax.set_ylabel("functions")
        ax.set_title(f"{gates.name}: sigmoid gate, mean {gs['gate_mean']:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_montage(r: EquivarianceResult, path: Path) -> Path:
    """Central z-slices: input and rotated input, then per layer and channel F(x), F(g·x) and
    g⁻¹·F(g·x) (equal to F(x) when the layer is equivariant), one colour scale per triple."""
    plt = _plt()
    names = list(r.montage)
    channels = max((m[0].shape[0] for m in r.montage.values()), default=1)
    ncols = 3 * channels
    fig, axes = plt.subplots(1 + len(names), ncols, figsize=(2.3 * ncols, 2.2 * (1 + len(names))), squeeze=False)
    errors = {layer.name: layer for layer in r.layers}

    def show(ax, vol, vmin, vmax, title):
        im = ax.imshow(vol[:, :, vol.shape[2] // 2], cmap="magma", vmin=vmin, vmax=vmax, origin="lower")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
        return im

    a, b = r.input
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    for ax in axes[0]:
        ax.axis("off")
    show(axes[0, 0], a, lo, hi, "input x")
    axes[0, 0].axis("on")
    im = show(axes[0, 1], b, lo, hi, "g·x (z +90°)")
    axes[0, 1].axis("on")
    fig.colorbar(im, ax=axes[0, 1], fraction=0.046)
    for row, name in enumerate(names, start=1):
        fa, fb, back = r.montage[name]
        e = errors.get(name)
        for c in range(ncols // 3):
            cols = axes[row, 3 * c : 3 * c + 3]
            if c >= fa.shape[0]:
                for ax in cols:
                    ax.axis("off")
                continue
            lo = float(min(fa[c].min(), fb[c].min()))
            hi = float(max(fa[c].max(), fb[c].max()))
            show(cols[0], fa[c], lo, hi, f"{name} ch{c}: F(x)")
            show(cols[1], fb[c], lo, hi, "F(g·x)")
            im = show(cols[2], back[c], lo, hi, "g⁻¹·F(g·x)" + (f"\nrel err {e.invariant_rel_error:.1e}" if e else ""))
            fig.colorbar(im, ax=cols[2], fraction=0.046)
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("central z-slices (x up, y across) of per-channel scalar maps; g = +90° about z", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7
_ERR_FLOOR = 1e-9  # errors below this (exact zeros) are drawn at the floor


def plot_equivariance_errors(r: EquivarianceResult, path: Path) -> Path:
    """equivariance.png: see `equivariance_figure`."""
    plt = _plt()
    fig = equivariance_figure(r)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def equivariance_figure(r: EquivarianceResult):
    """Relative equivariance error per layer on a log axis from 1e-9 to beyond 1, with the two
    reference levels: float32 round-off (an exactly equivariant layer computed in float32 lands
    at about 1e-7 to 1e-6) and "no equivariance" (about 1; √2 for unrelated maps of equal norm)."""
    plt = _plt()
    names = [layer.name for layer in r.layers]
    full = np.array([max(layer.rel_error, _ERR_FLOOR) for layer in r.layers])
    inv = np.array([max(layer.invariant_rel_error, _ERR_FLOOR) for layer in r.layers])
    fig, ax = plt.subplots(figsize=(8, 0.24 * len(names) + 2.2))
    pos = np.arange(len(names))
    ax.axvspan(_ERR_FLOOR, 10 * FLOAT32_EPS, color="tab:green", alpha=0.12, lw=0, label="float32 round-off: exact equivariance")
    ax.axvline(FLOAT32_EPS, color="tab:green", lw=1, ls=":")
    ax.axvline(1.0, color="tab:red", lw=1.2, ls="--", label="≈ 1: no equivariance (√2: unrelated maps)")
    ax.barh(pos - 0.2, full, 0.4, left=_ERR_FLOOR, label="‖F(g·x) − T_g F(x)‖ / ‖T_g F(x)‖ (fiber law)")
    ax.barh(pos + 0.2, inv, 0.4, left=_ERR_FLOOR, label="invariant-pooled maps, spatial rotation")
    ax.set_xscale("log")
    ax.set_xlim(_ERR_FLOOR, max(3.0, 2.0 * float(max(full.max(), inv.max()))))
    ax.set_yticks(pos)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_ylim(len(names) - 0.4, -0.6)  # first layer on top
    ax.set_xlabel(f"relative error (log scale; float32 ε = {FLOAT32_EPS:.1e} dotted)")
    ax.set_title(f"feature equivariance under g = +90° about z (logits: {r.logits_rel_error:.1e})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    below = 0.6 / (0.24 * len(names) + 1.0)  # 0.6 inch under the axes: below the x label
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -below), ncol=2, frameon=False)
    fig.tight_layout()
    return fig
