"""The package's import graph has no cycles (tools/import_graph.py counts lazy imports too)."""

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "import_graph.py"


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_import_cycles():
    tool = _tool()
    graph = tool.edges()
    assert "volrot.artifacts.checkpoint" in graph["volrot.inference.predict"]  # lazy imports are counted
    assert tool.cycles(graph) == []


def test_cycle_detector_finds_a_cycle():
    tool = _tool()
    assert tool.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert tool.cycles({"a": {"b"}, "b": set()}) == []
