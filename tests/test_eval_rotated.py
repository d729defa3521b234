import csv
import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from volrot.data.base import ArrayDataset
from volrot.engine.rotated import ROW_FIELDS, SUMMARY_FIELDS, evaluate_rotated
from volrot.engine.rotated_report import REPORT_FILES, load_report, render_table, write_report
from volrot.errors import UserError
from volrot.models.registry import create_model
from volrot.so3.volume import centred_coordinates


class MeanModel(nn.Module):
    """Invariant by construction: global mean intensity -> linear head."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-3.0], [3.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(x.mean(dim=(1, 2, 3, 4))[:, None])


class CentroidModel(nn.Module):
    """Logits = intensity centroid (x, y, z): rotating the input by R rotates the logits by R."""

    def forward(self, x):
        w = x.sum(1)
        p = centred_coordinates(x.shape[-3:], device=x.device)
        return torch.einsum("bdhw,dhwi->bi", w, p) / w.sum((1, 2, 3))[:, None]


class FlatModel(nn.Module):
    """No symmetry at all: a linear map of the flattened volume."""

    def __init__(self, voxels):
        super().__init__()
        self.lin = nn.Linear(voxels, 2)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _dataset(n=16, size=10, classes=2, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    imgs = rng.normal(size=(n, 1, size, size, size)).astype(np.float32) + labels[:, None, None, None, None]
    if positive:
        imgs = np.abs(imgs) + 0.1
    return ArrayDataset(imgs, labels)


def test_invariant_model_has_zero_error_and_full_consistency_on_octahedral():
    rep = evaluate_rotated(MeanModel(), _dataset(), task="binary", protocols=["octahedral"], batch_size=8)
    s = rep.protocols["octahedral"]
    assert s["count"] == 24 and s["method"] == "exact"
    assert s["max_abs_dlogit"] < 1e-5 and s["rel_dlogit"] < 1e-5
    assert s["consistency_mean"] == 1.0 and s["consistency_worst"] == 1.0
    assert s["acc_std"] == 0.0 and s["acc_mean"] == rep.reference["acc"]
    # the interpolation control is always there; the identity through trilinear is ~exact
    control = rep.rows_of("control")
    assert control[0]["label"] == "identity (trilinear)" and len(control) == 4
    assert [r["index"] for r in control] == [0, 1, 2, 3]
    assert control[0]["max_abs_dlogit"] < 1e-5


def test_untrained_resnet3d_is_clearly_not_invariant():
    torch.manual_seed(0)
    model = create_model("resnet3d", num_classes=2, width=4)
    rep = evaluate_rotated(model, _dataset(8), task="binary", protocols="octahedral", batch_size=48)
    s = rep.protocols["octahedral"]
    assert s["rel_dlogit"] > 1e-2, s  # measured ~0.1; an invariant model gives < 1e-6
    assert s["max_abs_dlogit"] > 1e3 * 1e-6
    assert rep.rows_of("octahedral")[0]["max_abs_dlogit"] < 1e-6  # identity of the exact path


def test_rows_match_their_rotation():
    # centroid logits: Δ = |R m − m| exactly, which ties every row to its stated rotation
    ds = _dataset(6, size=9, classes=3, positive=True)
    rep = evaluate_rotated(
        CentroidModel(), ds, task="multi-class", protocols=["octahedral", "axes"], angles=90, batch_size=4
    )
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    from volrot.so3.volume import apply_sphere_mask

    m = CentroidModel()(apply_sphere_mask(x)).double().numpy()
    for row in rep.rows_of("octahedral") + rep.rows_of("axes"):
        r = Rotation.from_rotvec(np.radians([row["rx_deg"], row["ry_deg"], row["rz_deg"]])).as_matrix()
        assert row["max_abs_dlogit"] == pytest.approx(np.abs(m @ r.T - m).max(), abs=2e-4), row["label"]
    assert len(rep.rows_of("axes")) == 12


def test_results_do_not_depend_on_batching():
    ds = _dataset(7, size=8)
    model = FlatModel(8**3)
    kw = dict(task="binary", protocols=["octahedral", "haar"], n=5, seed=3)
    a = evaluate_rotated(model, ds, batch_size=3, **kw)
    b = evaluate_rotated(model, ds, batch_size=64, **kw)
    for ra, rb in zip(a.rows, b.rows):
        assert ra["label"] == rb["label"]
        assert ra["max_abs_dlogit"] == pytest.approx(rb["max_abs_dlogit"], rel=1e-4, abs=1e-6)
        assert ra["acc"] == rb["acc"]
    assert a.protocols["haar"]["max_abs_dlogit"] > 1e-3


def test_report_fields_and_files(tmp_path):
    rep = evaluate_rotated(
        MeanModel(), _dataset(), task="binary", protocols="all", angles=60, n=4, seed=1, batch_size=16
    )
    assert list(rep.protocols) == ["octahedral", "axes", "so3-grid", "haar", "control"]
    counts = {k: v["count"] for k, v in rep.protocols.items()}
    assert counts == {"octahedral": 24, "axes": 18, "so3-grid": 50, "haar": 4, "control": 4}
    for s in rep.protocols.values():
        assert set(SUMMARY_FIELDS) | {"details"} == set(s)
    assert rep.protocols["haar"]["details"] == {"count": 4, "seed": 1}
    assert 50 <= rep.protocols["so3-grid"]["details"]["spacing_deg"] <= 60
    assert all(set(r) == set(ROW_FIELDS) for r in rep.rows)
    assert len(rep.rows) == sum(counts.values())
    assert rep.meta["n_samples"] == 16 and rep.meta["mask"] == "sphere" and rep.meta["seed"] == 1
    # the mean of white noise is not invariant under interpolation (measured 0.14)
    assert 0 < rep.protocols["so3-grid"]["rel_dlogit"] < 0.3

    paths = write_report(rep, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == sorted(REPORT_FILES)
    data = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert set(data) == {"meta", "reference", "protocols", "rows"}
    assert data["reference"]["n_samples"] == 16
    again = load_report(tmp_path / "out" / "report.json")
    assert again.rows == rep.rows and again.protocols == rep.protocols and again.meta == rep.meta
    with open(tmp_path / "out" / "report.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(ROW_FIELDS)
    assert rows[0]["protocol"] == "reference" and len(rows) == 1 + len(rep.rows)
    assert {r["protocol"] for r in rows} == {"reference", "octahedral", "axes", "so3-grid", "haar", "control"}
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    from rich.console import Console

    console = Console(width=100, record=True)
    console.print(render_table(rep))
    text = console.export_text()
    for name in ("unrotated", "octahedral", "so3-grid", "control", "spacing"):
        assert name in text


def test_pad_mode_grows_the_input_and_keeps_mass():
    rep = evaluate_rotated(MeanModel(), _dataset(6, size=8), task="binary", protocols=["haar"], n=3, mask="pad")
    assert rep.meta["input_shape"] == [1, 14, 14, 14]  # 3.5·√3 = 6.06 -> pad 3 per side
    # the whole volume stays inside the grid: the mean (total mass) changes little
    assert rep.protocols["haar"]["rel_dlogit"] < 0.05


def test_max_samples_and_multiclass():
    rep = evaluate_rotated(
        CentroidModel(), _dataset(12, size=8, classes=3, positive=True), task="multi-class",
        protocols=["octahedral"], max_samples=6,
    )  # fmt: skip
    assert rep.meta["n_samples"] == 6 and rep.meta["num_classes"] == 3
    assert 0.0 <= rep.reference["acc"] <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"protocols": ["spin"]}, "unknown protocol"),
        ({"mask": "circle"}, "--mask"),
        ({"angles": 0}, "--angles"),
        ({"n": 0, "protocols": "haar"}, "--n"),
        ({"task": "regression"}, "task"),
        ({"max_samples": 0}, "--max-samples"),
    ],
)
def test_user_errors(kwargs, message):
    kw = {"task": "binary", **kwargs}
    with pytest.raises(UserError, match=message):
        evaluate_rotated(MeanModel(), _dataset(4, size=6), **kw)


def test_octahedral_needs_cubic_volumes():
    ds = ArrayDataset(np.ones((2, 1, 6, 6, 8), np.float32), np.array([0, 1]))
    with pytest.raises(UserError, match="cubic"):
        evaluate_rotated(MeanModel(), ds, task="binary", protocols="octahedral")
    rep = evaluate_rotated(MeanModel(), ds, task="binary", protocols="haar", n=2)
    assert rep.meta["input_shape"] == [1, 6, 6, 8]
