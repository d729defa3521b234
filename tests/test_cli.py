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


def test_help_shows_metavars_not_python_types_and_models_has_an_example():
    import re

    for args in ([], ["train"], ["models"], ["eval-rotated"], ["export"], ["predict"], ["inspect-activation"]):
        res = runner.invoke(app, [*args, "--help"], terminal_width=100)
        assert res.exit_code == 0
        assert not re.search(r"<(list\[|bool|str|int|float|path)", res.output, re.IGNORECASE), (args, res.output)
    predict = runner.invoke(app, ["predict", "--help"], terminal_width=100).output
    assert "MODEL" in predict and "PATH..." in predict and "UID" in predict
    models = runner.invoke(app, ["models", "--help"], terminal_width=100).output
    assert "Examples" in models and "volrot models" in models and "--set model." in models


def test_models_table_reads_at_80_columns():
    from volrot.models import get_entry, list_models

    res = runner.invoke(app, ["models"], terminal_width=80)
    assert res.exit_code == 0 and "…" not in res.output
    assert all(len(line) <= 80 for line in res.output.splitlines())
    words = set(res.output.split())
    for name in list_models():  # every option with its default, whole; every word of the description
        for k, v in get_entry(name).defaults.items():
            assert f"{k}={v}" in res.output, (name, k)
        assert set(get_entry(name).description.split()) <= words, name
