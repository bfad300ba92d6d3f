"""The layer graph: Caffe layers in order, SSA blob keys, shapes, geometry, weights."""
from .graph import Graph, load_graph

__all__ = ["Graph", "load_graph"]
