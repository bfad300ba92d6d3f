# A DeepDream-style loop as pycaffe users write it (the DeepDream notebook's make_step,
# with a one-unit objective so that the first step can be checked against Caffe):
# forward(end=) / blobs[end].diff[:] = ... / backward(start=) / blobs['data'].diff.
# DEPLOY, WEIGHTS, INPUT, END, UNIT, VALUE and OUT come from the environment.
import json
import os

import numpy as np
import caffe

net = caffe.Net(os.environ["DEPLOY"], os.environ["WEIGHTS"], caffe.TEST)
end = os.environ["END"]
unit = tuple(json.loads(os.environ["UNIT"]))
src = net.blobs['data']
src.data[...] = np.load(os.environ["INPUT"])


def objective(dst):
    dst.diff[...] = 0
    dst.diff[unit] = float(os.environ["VALUE"])


def make_step(net, step_size=1.5, end=end):
    src = net.blobs['data']
    dst = net.blobs[end]
    net.forward(end=end)
    objective(dst)
    net.backward(start=end)
    g = src.diff
    src.data[:] += step_size / np.abs(g).mean() * g
    return g.copy(), float(dst.data[unit])


grads, activations = [], []
for i in range(4):
    g, a = make_step(net)
    grads.append(g)
    activations.append(a)
    print(i, end, a)
np.save(os.environ["OUT"] + "/first_grad.npy", grads[0])
np.save(os.environ["OUT"] + "/activations.npy", np.array(activations))
