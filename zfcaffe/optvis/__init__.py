"""Feature visualisation by optimisation, laid out as Lucid's optvis: objectives
(what to maximise, with its diffs), parameterisations (how the input is made, with
the adjoint), transforms (random jitter, shifts, scaling, rotation, with exact
adjoints) and one render loop. The methods built on it (class models, DeepDream,
inversion, fooling images) are in zfcaffe.methods."""
from . import objectives, param, render, transforms  # noqa: F401
