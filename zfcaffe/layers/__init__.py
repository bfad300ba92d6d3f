"""Caffe layer families. Importing this package registers every type."""
import importlib
import pkgutil

from .base import PYTHON_BUILTINS, REGISTRY, VARIANTS, Emitter, Geometry, Layer, layer_class, register

# Every module here is a layer family (one per Caffe fork family); each registers its types.
for _family in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _family != "base":
        importlib.import_module(f"{__name__}.{_family}")

# Types that only train: dropped from an analysis graph with a note.
TRAINING_ONLY = {
    "SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss", "ContrastiveLoss",
    "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "Accuracy", "HDF5Output",
}

__all__ = ["PYTHON_BUILTINS", "REGISTRY", "TRAINING_ONLY", "VARIANTS", "Emitter", "Geometry", "Layer",
           "layer_class", "register"]
