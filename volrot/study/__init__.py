"""`volrot study` and `volrot compare`: which model holds up under rotation, one command away.

- `spec`: study files (data, eval, seeds, named model entries) and their validation.
- `cells`: the (model, seed) cells, their sharding and the state of their run folders.
- `runner`: `run_study` — train, resume, evaluate, skip finished cells, report.
- `results`: a cell's numbers from its own files; mean ± std across seeds per model.
- `report` / `figures`: study.md/csv/json/html and the two figures; the rich table.
"""

from __future__ import annotations

from pathlib import Path

from volrot.study.results import StudyResults, collect_paths
from volrot.study.runner import StudyRun, run_study
from volrot.study.spec import StudySpec, load_study, shipped_studies, study_from_folder


def compare(paths, out: str | Path) -> tuple[StudyResults, dict[str, Path]]:
    """`volrot compare`: the study table and figures of existing runs, written into `out`."""
    from volrot.study.report import write_study_report

    res = collect_paths(paths)
    return res, write_study_report(res, out)


__all__ = ["StudyResults", "StudyRun", "StudySpec", "compare", "load_study", "run_study", "shipped_studies", "study_from_folder"]
