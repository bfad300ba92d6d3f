# The seed's CIFAR-10 script (../shared/seeds/004_*.txt) on photos rather than on the
# LMDB: the net and weights of the seed, fed as pycaffe users feed images (caffe.io's
# load_image and Transformer with the CIFAR-10 mean). The test swaps `import caffe` for
# `from zfcaffe import caffe` and nothing else. MODELS, IMAGES (comma-separated) and OUT
# come from the environment.
import os
import sys

import numpy as np
import caffe


def mainex():
    caffe_root = os.environ["MODELS"] + "/"
    caffe.set_mode_cpu()
    net = caffe.Net(caffe_root + 'cifar10_quick/cifar10_quick_train_test.prototxt',
                    caffe_root + 'cifar10_quick/cifar10_quick_iter_4000.caffemodel',
                    caffe.TEST)
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.ParseFromString(open(caffe_root + 'cifar10_quick/mean.binaryproto', 'rb').read())
    mu = caffe.io.blobproto_to_array(blob)[0].mean(1).mean(1)

    transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
    transformer.set_transpose('data', (2, 0, 1))
    transformer.set_channel_swap('data', (2, 1, 0))
    transformer.set_raw_scale('data', 255)
    transformer.set_mean('data', mu)

    images = os.environ["IMAGES"].split(",")
    net.blobs['data'].reshape(len(images), 3, 32, 32)
    for i, path in enumerate(images):
        net.blobs['data'].data[i] = transformer.preprocess('data', caffe.io.load_image(path))
    out = net.forward()
    np.save(os.environ["OUT"] + "/data.npy", net.blobs['data'].data)
    np.save(os.environ["OUT"] + "/ip2.npy", out['ip2'])
    print('predicted classes:', out['ip2'].argmax(axis=1))


if __name__ == '__main__':
    mainex()
    sys.exit(0)
