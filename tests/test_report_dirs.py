"""Report folders (`volrot.fileio.write_report_dir`): a new folder per report by default, an
existing folder with files refused without force, nothing left behind by a failed write."""

from __future__ import annotations

from pathlib import Path

import pytest

from volrot.errors import UserError
from volrot.fileio import check_report_dir, write_report_dir


def _writer(text: str):
    def write(folder: Path) -> dict[str, Path]:
        (folder / "report.json").write_text(text, encoding="utf-8")
        (folder / "report.png").write_bytes(b"png")
        return {"report.json": folder / "report.json", "report.png": folder / "report.png"}

    return write


def test_default_is_a_new_folder_each_time_and_old_reports_stay(tmp_path):
    parent = tmp_path / "run" / "eval-rotated"
    first = write_report_dir(_writer("one"), out=None, default_parent=parent)
    second = write_report_dir(_writer("two"), out=None, default_parent=parent)
    assert first["report.json"].parent != second["report.json"].parent
    assert first["report.json"].read_text(encoding="utf-8") == "one"
    assert second["report.json"].read_text(encoding="utf-8") == "two"
    # only the two report folders: no hidden temporary folder left behind
    assert sorted(p.name for p in parent.iterdir()) == sorted(p["report.json"].parent.name for p in (first, second))


def test_existing_out_with_files_needs_force(tmp_path):
    out = tmp_path / "rep"
    write_report_dir(_writer("one"), out=out, default_parent=tmp_path)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="not empty; pass --force"):
        check_report_dir(out)
    with pytest.raises(UserError, match="--force"):
        write_report_dir(_writer("two"), out=out, default_parent=tmp_path)
    assert (out / "report.json").read_text(encoding="utf-8") == "one"
    paths = write_report_dir(_writer("two"), out=out, default_parent=tmp_path, force=True)
    assert paths["report.json"] == out / "report.json" and paths["report.json"].read_text(encoding="utf-8") == "two"
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"  # files not of the report are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_empty_out_is_used_and_a_file_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    paths = write_report_dir(_writer("x"), out=tmp_path / "empty", default_parent=tmp_path)
    assert paths["report.json"] == tmp_path / "empty" / "report.json"
    (tmp_path / "f").write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="is a file"):
        check_report_dir(tmp_path / "f", force=True)


def test_a_failed_write_leaves_nothing(tmp_path):
    def broken(folder: Path):
        (folder / "report.json").write_text("half", encoding="utf-8")
        raise RuntimeError("plot failed")

    with pytest.raises(RuntimeError):
        write_report_dir(broken, out=tmp_path / "rep", default_parent=tmp_path)
    with pytest.raises(RuntimeError):
        write_report_dir(broken, out=None, default_parent=tmp_path / "eval")
    assert not (tmp_path / "rep").exists()
    assert list((tmp_path / "eval").iterdir()) == []
