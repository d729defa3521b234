"""Inference: inputs and preprocessing (`inputs`), test-time augmentation (`tta`), models loaded
for prediction (`predict`: `Predictor`, `OnnxModel`, `load_model`), results and writers."""

from volrot.inference.predict import OnnxModel, Predictor, load_model, predict_files, predict_one

__all__ = ["OnnxModel", "Predictor", "load_model", "predict_files", "predict_one"]
