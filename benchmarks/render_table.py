"""Print the README benchmark table (markdown) from harness JSON files.

    python benchmarks/render_table.py benchmarks/results/*.json

Files that are not harness reports (other scripts' JSON) are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from volrot.benchmark import load_reports, render_table  # noqa: E402


def main(argv=None) -> None:
    paths = (argv if argv is not None else sys.argv[1:]) or sorted(Path(__file__).parent.glob("results/*.json"))
    print(render_table(load_reports(paths)))


if __name__ == "__main__":
    main()
