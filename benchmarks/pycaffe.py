"""zfcaffe.caffe (the pycaffe layer) against the same work through zfcaffe.Net, and a
full backward pass from CaffeNet's fc8 to the data against PyTorch CPU autograd on the
same weights, in one run, the competitors alternating. Targets: the pycaffe layer
costs <= 1.05x zfcaffe.Net; the backward runs >= 1.0x PyTorch.

    python benchmarks/pycaffe.py [--batch 16] [--min-time 2]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from common import make_caffenet, race, table, workdir
from deconv import photo_batch

import zfcaffe
from zfcaffe import caffe


def torch_caffenet(net):
    """CaffeNet in PyTorch with the net's weights (converted once): fc8 of an input tensor."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(os.cpu_count())
    P = {k: [torch.from_numpy(np.array(b.data)) for b in v] for k, v in net.params.items()}

    def lrn(t):   # Caffe's ACROSS_CHANNELS LRN: alpha / size
        return F.local_response_norm(t, 5, alpha=1e-4, beta=0.75, k=1.0)

    def fc8(xt):
        t = F.relu(F.conv2d(xt, *P["conv1"], stride=4))
        t = lrn(F.max_pool2d(t, 3, 2, ceil_mode=True))
        t = F.relu(F.conv2d(t, *P["conv2"], padding=2, groups=2))
        t = lrn(F.max_pool2d(t, 3, 2, ceil_mode=True))
        t = F.relu(F.conv2d(t, *P["conv3"], padding=1))
        t = F.relu(F.conv2d(t, *P["conv4"], padding=1, groups=2))
        t = F.relu(F.conv2d(t, *P["conv5"], padding=1, groups=2))
        t = F.max_pool2d(t, 3, 2, ceil_mode=True).flatten(1)
        t = F.relu(F.linear(t, *P["fc6"]))
        t = F.relu(F.linear(t, *P["fc7"]))
        return F.linear(t, *P["fc8"])
    return fc8


def torch_backward(net, x: np.ndarray, seed: np.ndarray):
    """A callable running PyTorch's backward pass from fc8 to the data (the forward
    graph is built once and kept), and fc8's value."""
    import torch
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    fc8 = torch_caffenet(net)(xt)
    g = torch.from_numpy(seed)

    def run():
        xt.grad = None
        fc8.backward(g, retain_graph=True)
        return xt.grad.numpy()
    return run, fc8.detach().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    os.environ.setdefault("ZFCAFFE_QUIET", "1")
    proto, weights = make_caffenet(workdir())
    n = args.batch
    x = np.concatenate([photo_batch(min(n, 9))] * -(-n // 9))[:n]
    engine = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": (n, 3, 227, 227)})
    net = caffe.Net(str(proto), str(weights), caffe.TEST)
    net.blobs["data"].reshape(n, 3, 227, 227)
    net.reshape()
    seed = np.random.default_rng(0).standard_normal((n, 1000)).astype(np.float32)

    fwd = race({"zfcaffe.caffe": lambda: net.forward(data=x), "zfcaffe.Net": lambda: engine.forward(data=x)},
               n, args.min_time)
    net.forward(data=x)
    engine.forward(data=x)

    def pycaffe_backward():
        net.blobs["fc8"].diff[...] = seed
        return net.backward(start="fc8")["data"]

    runners = {"zfcaffe.caffe": pycaffe_backward,
               "zfcaffe.Net": lambda: engine.backward({"fc8": seed})["data"]}
    try:
        import torch
        runners["PyTorch"], torch_fc8 = torch_backward(net, x, seed)
        peer = f"PyTorch {torch.__version__} autograd"
    except ImportError:
        peer, torch_fc8 = None, None
    bwd = race(runners, n, args.min_time)

    rows = [["forward (every blob kept)", f"{fwd['zfcaffe.caffe']:.1f}", f"{fwd['zfcaffe.Net']:.1f}", "",
             f"{fwd['zfcaffe.Net'] / fwd['zfcaffe.caffe']:.3f}x", ""],
            ["backward fc8 -> data", f"{bwd['zfcaffe.caffe']:.1f}", f"{bwd['zfcaffe.Net']:.1f}",
             f"{bwd['PyTorch']:.1f}" if peer else "-", f"{bwd['zfcaffe.Net'] / bwd['zfcaffe.caffe']:.3f}x",
             f"{bwd['zfcaffe.caffe'] / bwd['PyTorch']:.2f}x" if peer else "-"]]
    print(f"CaffeNet 227x227, batch {n}, {os.cpu_count()} CPU threads; images/s (best of alternating rounds)")
    print(table(["pass", "zfcaffe.caffe", "zfcaffe.Net", peer or "PyTorch", "pycaffe layer cost",
                 "zfcaffe.caffe vs PyTorch"], rows))
    if peer:
        ours, theirs = pycaffe_backward(), runners["PyTorch"]()
        fc8_err = np.abs(net.blobs["fc8"].data - torch_fc8).max() / np.abs(torch_fc8).max()
        ties = sum(map(len, net._engine.last_near_ties.values()))
        print(f"agreement: fc8 {fc8_err:.1e}, data diff {np.abs(ours - theirs).max() / np.abs(theirs).max():.1e} "
              f"(max |diff| / max |value|; the backward crossed {ties} decisions taken by float rounding, "
              "max-pool near-ties and ReLU inputs within rounding of 0, where two engines may differ)")
    else:
        print("PyTorch not installed: pip install torch (benchmark-only) for the comparison")


if __name__ == "__main__":
    main()
