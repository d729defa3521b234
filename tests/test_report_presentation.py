"""Tables and figures that read (#17 item 10): inspect tables at 80 columns with whole layer
names and values, equivariance.png with reference levels on a sensible log axis, report.png with
chance lines, a full [0, 1] axis and an unclipped title with one protocol."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from volrot.models import create_model


@pytest.fixture(scope="module")
def resnet_report():
    from volrot.inspection import inspect_model
    from volrot.so3.sampling import haar

    torch.manual_seed(0)
    model = create_model("resnet3d", in_channels=1, num_classes=3, width=2).eval()
    return inspect_model(model, torch.rand(1, 1, 16, 16, 16), functions=4, rotations=haar(4).matrices)


def test_inspect_tables_fit_80_columns_without_cutting(resnet_report):
    from volrot.inspection import print_report

    buf = io.StringIO()
    print_report(resnet_report, Console(file=buf, width=80, force_terminal=False))
    text = buf.getvalue()
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)
    rows = text.splitlines()
    for layer in resnet_report.equivariance.layers:  # every layer name whole, on one line
        assert any(line.split()[:1] == [layer.name] for line in rows), layer.name
        assert f"{layer.rel_error:.1e}" in text and f"{layer.max_rel_error:.1e}" in text
    assert "max rel. = max |F(g·x) − T_g F(x)| / max |T_g F(x)|" in " ".join(text.split())


def test_equivariance_figure_has_reference_levels_and_a_wide_log_axis(resnet_report):
    import matplotlib.pyplot as plt

    from volrot.inspection.plots import FLOAT32_EPS, equivariance_figure

    fig = equivariance_figure(resnet_report.equivariance)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert ax.get_xscale() == "log" and lo <= 1e-8 and hi >= 2.0
    vlines = [ln.get_xdata()[0] for ln in ax.get_lines()]
    assert 1.0 in vlines and FLOAT32_EPS in vlines
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("no equivariance" in s for s in labels) and any("float32 round-off" in s for s in labels)
    plt.close(fig)


def _report(protocols):
    from volrot.config import DataConfig
    from volrot.data import load_data
    from volrot.engine.rotated import evaluate_rotated

    b = load_data(DataConfig(name="shapes", size=16, max_samples=8))
    torch.manual_seed(0)
    model = create_model("resnet3d", in_channels=1, num_classes=len(b.class_names), width=2).eval()
    r = evaluate_rotated(model, b.test, task=b.task, protocols=protocols, angles=90, n=2, batch_size=8, max_samples=4)
    r.meta = {"model": "resnet3d", "data": "shapes", "class_names": list(b.class_names), **r.meta}
    return r


def test_rotated_figure_has_chance_lines_full_axis_and_a_title_that_fits():
    import matplotlib.pyplot as plt

    from volrot.engine.rotated_report import report_figure

    report = _report(["octahedral"])
    fig = report_figure(report)
    acc_ax, auc_ax = fig.axes[0], fig.axes[1]
    for ax, level, label in ((acc_ax, 1 / 8, "chance (1/8)"), (auc_ax, 0.5, "chance (0.5)")):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert label in lines and np.allclose(lines[label].get_ydata(), level)
        assert ax.get_ylim() == pytest.approx((-0.02, 1.02))
    # the title lies inside the figure
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    width = fig.get_size_inches()[0] * fig.dpi
    assert box.x0 >= 0 and box.x1 <= width
    plt.close(fig)
