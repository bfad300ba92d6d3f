"""Caffe layer families. Importing this package registers every type."""
from . import (activations, conv, data, eltwise, inner_product, normalization,  # noqa: F401
               pooling, routing, scale, softmax)
from .base import REGISTRY, Emitter, Geometry, Layer, register

# Types that only train: dropped from an analysis graph with a note.
TRAINING_ONLY = {
    "SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss", "ContrastiveLoss",
    "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "Accuracy", "HDF5Output",
}

__all__ = ["REGISTRY", "TRAINING_ONLY", "Emitter", "Geometry", "Layer", "register"]
