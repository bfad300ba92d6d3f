"""Real pycaffe in another Python (--caffe-python PATH), run in a subprocess: each layer
is run alone (Net.forward(start=, end=)) and its tops copied right after, so in-place
layers leave both values (layer-keyed, as the oracle's dumps)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

from ...errors import ZfcaffeError
from .dump import DumpSide

SCRIPT = r'''
import sys
import numpy as np
import caffe
proto, weights, feeds, out = sys.argv[1:5]
caffe.set_mode_cpu()
net = caffe.Net(proto, weights, caffe.TEST) if weights else caffe.Net(proto, caffe.TEST)
with np.load(feeds) as z:
    for k in z.files:
        net.blobs[k].reshape(*z[k].shape)
        net.blobs[k].data[...] = z[k]
net.reshape()
res = {}
names = list(net._layer_names)
for i, name in enumerate(names):
    if net.layers[i].type in ("Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData"):
        continue
    net.forward(start=name, end=name)
    tops = net.top_names[name]
    for j, t in enumerate(tops):
        res[name if len(tops) == 1 else "%s#%d" % (name, j)] = np.array(net.blobs[t].data, dtype=np.float32)
np.savez(out, **res)
print("caffe", getattr(caffe, "__version__", "?"))
'''


class PycaffeSide(DumpSide):
    reruns = True

    def __init__(self, prototxt: str, weights: str | None, python: str | None = None, env: dict | None = None):
        self.prototxt, self.weights = prototxt, weights
        self.python = python or sys.executable
        self.env = env
        self.description = f"pycaffe ({self.python})"
        self.arrays, self.unmatched, self.path = {}, [], prototxt

    def run(self, inputs: dict) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="zfcaffe-compare-") as tmp:
            feeds, out = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "blobs.npz")
            np.savez(feeds, **inputs)
            script = os.path.join(tmp, "run_pycaffe.py")
            with open(script, "w") as f:
                f.write(SCRIPT)
            try:
                r = subprocess.run([self.python, script, self.prototxt, self.weights or "", feeds, out],
                                   capture_output=True, text=True, env=self.env, timeout=3600)
            except OSError as e:
                raise ZfcaffeError(f"--caffe-python {self.python}: cannot run it ({e.strerror})") from None
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
                if "No module named 'caffe'" in r.stderr:
                    raise ZfcaffeError(f"--caffe-python {self.python}: that Python cannot import caffe; "
                                       "expected a Python with pycaffe (BVLC Caffe's python/ on its path)")
                raise ZfcaffeError(f"pycaffe ({self.python}) failed on {self.prototxt}: {last}")
            with np.load(out) as z:
                return {k: z[k] for k in z.files}

    def values(self, net, inputs, ours):
        self.arrays = self.run(inputs)
        return super().values(net, inputs, ours)
