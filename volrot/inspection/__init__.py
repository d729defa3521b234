"""Look inside a trained model: what EquiLoPO's SO(3) activations do and how features rotate.

`inspect_checkpoint` is `volrot inspect-activation` (see `volrot.inspection.report` for the
`inspect.json` fields); `inspect_model` works on any model and volumes; `measure_equivariance`
(`volrot.inspection.equivariance`) and the probes (`volrot.inspection.activations`) are usable
on their own. Everything uses forward hooks: the model is not modified.
"""

from volrot.inspection.equivariance import feature_layers, measure_equivariance
from volrot.inspection.report import InspectReport, inspect_checkpoint, inspect_model, print_report, write_report

__all__ = [
    "InspectReport",
    "feature_layers",
    "inspect_checkpoint",
    "inspect_model",
    "measure_equivariance",
    "print_report",
    "write_report",
]
