"""The paper's dataset-scale analyses, one module per method; each has `run(...)`
returning a result object whose `figures()` are PNGs and whose numbers are arrays.
Shared mechanics (image lists, batching, progress) are in common.py."""
