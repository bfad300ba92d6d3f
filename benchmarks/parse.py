"""Prototxt parsing scales linearly with the file: nets of 1,000 to 20,000 layers,
seconds per 1,000 layers printed side by side (a quadratic parser's would grow).

    python benchmarks/parse.py
"""
from __future__ import annotations

import time

from common import table

from zfcaffe.graph import load_graph


def net_text(layers: int) -> str:
    head = 'name: "big"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 } } }\n'
    return head + "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "data" top: "data" }}\n'
                          for i in range(layers))


def main():
    rows = []
    for n in (1000, 2000, 5000, 10000, 20000):
        text = net_text(n)
        t = time.perf_counter()
        graph = load_graph("big.prototxt", text=text)
        dt = time.perf_counter() - t
        rows.append([n, f"{len(text) / 1e6:.2f} MB", f"{dt:.2f}", f"{dt / n * 1000:.3f}", len(graph.layers)])
    print(table(["layers", "text", "parse + graph s", "s per 1000 layers", "layers built"], rows))


if __name__ == "__main__":
    main()
