"""Calibrated per-op prediction: measured efficiency against the analytic floor, per GPU and op class
(docs/prediction.md; the file format: docs/contracts.md section 11)."""
from gpuprobe.calibration.build import calibrate_source, calibration_from_frame, calibration_from_results
from gpuprobe.calibration.model import Calibration, ClassModel
from gpuprobe.calibration.shapes import OP_CLASSES, SHAPE_COLUMNS, class_floor_s, op_class_and_shape
from gpuprobe.calibration.step import StepPrediction, predict_decode_step
from gpuprobe.calibration.store import load_calibration, resolve_calibration, save_calibration, shipped_calibration

__all__ = [
    "Calibration", "ClassModel", "OP_CLASSES", "SHAPE_COLUMNS", "StepPrediction", "calibrate_source",
    "calibration_from_frame", "calibration_from_results", "class_floor_s", "load_calibration",
    "op_class_and_shape", "predict_decode_step", "resolve_calibration", "save_calibration", "shipped_calibration",
]
