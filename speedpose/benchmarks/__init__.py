"""Orientation benchmarks: ModelNet10-SO(3) and PASCAL3D+ with class-conditioned Image2Sphere.

Public API::

    ModelNet10Experiment, Pascal3DExperiment          # config schemas (task: modelnet10 | pascal3d)
    BenchmarkTask, make_adapter, make_dataset, build_model, predict_rotations, Predictions
    BenchmarkModel                                    # ResNet + I2S head (+ one-hot class)
    benchmark_metrics, flat_metrics, format_metrics_table, rotation_errors_deg

The dataset adapters live in :mod:`speedpose.data.modelnet10` and :mod:`speedpose.data.pascal3d`; tiny generated
datasets in their formats: :mod:`speedpose.benchmarks.testing`.
"""

from speedpose.benchmarks.config import ModelNet10Experiment, Pascal3DExperiment
from speedpose.benchmarks.metrics import benchmark_metrics, flat_metrics, format_metrics_table, rotation_errors_deg
from speedpose.benchmarks.model import BenchmarkModel
from speedpose.benchmarks.task import (
    BenchmarkTask,
    Predictions,
    build_model,
    class_names,
    make_adapter,
    make_dataset,
    predict_rotations,
)

__all__ = ["BenchmarkModel", "BenchmarkTask", "ModelNet10Experiment", "Pascal3DExperiment", "Predictions",
           "benchmark_metrics", "build_model", "class_names", "flat_metrics", "format_metrics_table",
           "make_adapter", "make_dataset", "predict_rotations", "rotation_errors_deg"]
