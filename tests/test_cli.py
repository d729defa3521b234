from typer.testing import CliRunner

import volrot
from volrot.cli import app

runner = CliRunner()


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and volrot.__version__ in res.output


def test_help_lists_commands_and_each_has_an_example():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("train", "eval-rotated", "export", "predict", "inspect-activation", "study", "compare"):
        assert cmd in res.output
        sub = runner.invoke(app, [cmd, "--help"])
        assert sub.exit_code == 0
        assert f"volrot {cmd}" in sub.output or (cmd == "train" and "volrot train" in sub.output), cmd


def test_models_lists_registry():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "resnet3d" in res.output
