"""Classify scans with a trained volrot model: python clinician.py MODEL SCAN...

MODEL is a checkpoint (.safetensors; needs torch) or an ONNX export (onnxruntime; no torch)."""
import sys

model_file, scans = sys.argv[1], sys.argv[2:]
if model_file.endswith(".onnx"):
    from volrot.inference import OnnxModel as load_model
else:
    from volrot import load_model
model = load_model(model_file)
for scan in scans:  # NIfTI files (.nii, .nii.gz) or DICOM series folders
    result = model.predict(scan)
    print(f"{scan}: {result['label']} ({result['probabilities'][result['label']]:.1%})")
