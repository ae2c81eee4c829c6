"""Deployment: ONNX export of the detectors and ONNX Runtime inference/evaluation.

Needs the packages of ``requirements/deploy.txt`` (onnx, onnxruntime, onnxscript); they are
imported only when a function needs them.
"""
from .onnx_export import (DEFAULT_OPSET, MIN_OPSET, ExportableDetector, OrtDetector,
                          UnsupportedExport, build_detector,
                          compare_detections, export_onnx, pytorch_detections, sample_images,
                          verify_onnx)
from .ort_model import OrtDetectorModel

__all__ = ['ExportableDetector', 'OrtDetector', 'OrtDetectorModel', 'UnsupportedExport',
           'build_detector', 'compare_detections', 'export_onnx', 'pytorch_detections',
           'sample_images', 'verify_onnx', 'MIN_OPSET', 'DEFAULT_OPSET']
