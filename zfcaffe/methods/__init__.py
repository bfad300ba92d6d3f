"""The survey's methods, one module each, on one contract: a function of a net (and
an input) that returns a result holding its arrays (`arrays()`) and what its figures
show. Gradient methods share one helper (gradients.py, SmoothGrad included);
optimisation methods share the render loop of zfcaffe.optvis."""
