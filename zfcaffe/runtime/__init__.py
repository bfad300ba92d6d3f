"""ONNX emission of a graph and ONNX Runtime sessions."""
