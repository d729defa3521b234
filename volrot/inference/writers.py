"""Writing predictions: CSV or JSON by the output file's suffix, atomically, all rows at once."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from volrot.errors import UserError
from volrot.inference.results import PredictReport

OUTPUT_SUFFIXES = (".csv", ".json")


def check_output_path(out: str | Path | None) -> Path | None:
    if out is None:
        return None
    o = Path(out)
    if not o.name.lower().endswith(OUTPUT_SUFFIXES):
        raise UserError(f"--out {o}: must end in .csv or .json")
    if o.is_dir():
        raise UserError(f"--out {o}: is a folder")
    from volrot.fileio import check_writable_folder

    check_writable_folder(o.parent, f"--out {o}")  # before any prediction is made
    return o


CSV_FIXED = ("path", "label", "probability")


def predictions_csv(report: PredictReport) -> str:
    """One row per input: path, label, probability, p_<class>..., size, spacing_mm, preprocessing, error."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_FIXED, *(f"p_{c}" for c in report.class_names), "size", "spacing_mm", "preprocessing", "error"])
    for r in report.rows:
        pre = r["preprocessing"] or {}
        w.writerow(
            [
                r["path"],
                r["label"] or "",
                "" if r["probability"] is None else f"{r['probability']:.6g}",
                *("" if c not in r["probabilities"] else f"{r['probabilities'][c]:.6g}" for c in report.class_names),
                " ".join(str(v) for v in pre.get("size", [])),
                " ".join(f"{v:g}" for v in pre.get("spacing_mm", [])),
                pre.get("mode", ""),
                r["error"] or "",
            ]
        )
    return buf.getvalue()


def predictions_json(report: PredictReport) -> str:
    doc = {
        "model": report.model,
        "class_names": report.class_names,
        "tta": report.tta,
        "preprocessing": report.preprocessing,
        "predictions": report.rows,
        "errors": len(report.errors),
    }
    return json.dumps(doc, indent=2)


def write_predictions(report: PredictReport, out: str | Path) -> Path:
    from volrot.fileio import atomic_write_text

    out = Path(out)
    from volrot.fileio import os_error_reason

    text = predictions_json(report) if out.name.lower().endswith(".json") else predictions_csv(report)
    try:
        atomic_write_text(out, text)
    except OSError as e:
        reason = os_error_reason(e)
        if reason is None:
            raise
        raise UserError(f"--out {out}: cannot write the predictions ({reason}); nothing was written") from None
    return out
