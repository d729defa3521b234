"""Classify scans with a trained volrot model: python clinician.py MODEL SCAN...

MODEL is a checkpoint (.safetensors; needs torch) or an ONNX export (onnxruntime; no torch).
A bad scan is reported and skipped; the exit code is 2 if any scan failed."""
import sys

model_file, scans = sys.argv[1], sys.argv[2:]
if model_file.endswith(".onnx"):
    from volrot.inference import OnnxModel as load_model
else:
    from volrot import load_model
model = load_model(model_file)
report = model.predict_many(scans)  # NIfTI files (.nii, .nii.gz), DICOM series folders, folders of them
for row in report.rows:
    if row["error"]:
        print(f"not classified: {row['error']}", file=sys.stderr)  # the message names the file
    else:
        print(f"{row['path']}: {row['label']} ({row['probability']:.1%})")
sys.exit(2 if report.errors else 0)
