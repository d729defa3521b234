"""Recipe values out of range are one line, exit 2, nothing written (issue #13, item 10).

Before: `optim.lr=.nan`, `train.num_workers=-1` and `optim.milestones=[a]` gave tracebacks, and
`data.max_samples=0` trained and wrote NaN into metrics.jsonl.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from volrot.cli import app
from volrot.config import recipe_from_dict
from volrot.errors import UserError

runner = CliRunner()

CASES = [
    ("optim.lr=.nan", "'optim.lr' must be a finite number, got nan"),
    ("optim.lr=.inf", "'optim.lr' must be a finite number, got inf"),
    ("optim.lr=0", "'optim.lr' must be a positive number, got 0.0"),
    ("optim.lr=-0.1", "'optim.lr' must be a positive number"),
    ("train.num_workers=-1", "'train.num_workers' must be 0 or more, got -1"),
    ("optim.milestones=[a]", "'optim.milestones' must be a list of finite numbers, got ['a']"),
    ("optim.milestones=[0.5, .nan]", "'optim.milestones' must be a list of finite numbers"),
    ("optim.milestones=[true]", "'optim.milestones' must be a list of finite numbers"),
    ("optim.milestones=[1.5]", "'optim.milestones' must be fractions of the epochs in [0, 1]"),
    ("optim.gamma=0", "'optim.gamma' must be a positive number"),
    ("optim.weight_decay=-1", "'optim.weight_decay' must be zero or positive"),
    ("data.max_samples=0", "'data.max_samples' must be at least 1 (or null for all), got 0"),
    ("data.split_fractions=[a, b, c]", "'data.split_fractions' must be a list of finite numbers"),
    ("train.epochs=0", "'train.epochs' must be at least 1"),
    ("train.batch_size=0", "'train.batch_size' must be at least 1"),
    ("train.ddp_timeout_s=0", "'train.ddp_timeout_s' must be a positive number of seconds"),
    ("data.size=1", "'data.size' must be at least 2"),
]


@pytest.mark.parametrize("assignment, expected", CASES, ids=[c[0] for c in CASES])
def test_value_out_of_range_is_one_line_exit_2_nothing_written(tmp_path, assignment, expected):
    out = tmp_path / "runs"
    res = runner.invoke(app, ["train", "--epochs", "1", "--size", "16", "--device", "cpu", "--out", str(out),
                              "--set", assignment, "-q"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], res.output
    assert not out.exists()


def test_library_raises_user_error_and_accepts_edges():
    with pytest.raises(UserError, match="must be a finite number"):
        recipe_from_dict({"optim": {"lr": float("nan")}})
    with pytest.raises(UserError, match="max_samples"):
        recipe_from_dict({"data": {"max_samples": 0}})
    r = recipe_from_dict({"optim": {"milestones": [0, 1], "momentum": 0}, "data": {"max_samples": 1}, "train": {"num_workers": 0}})
    assert r.optim.milestones == [0.0, 1.0] and r.data.max_samples == 1
