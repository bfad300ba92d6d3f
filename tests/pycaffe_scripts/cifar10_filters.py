# The seed's CIFAR-10 script (../shared/seeds/004_*.txt), as pycaffe users wrote it,
# with Python 3 prints; the test swaps `import caffe` for `from zfcaffe import caffe`
# and nothing else. MODELS, INPUT and OUT come from the environment.
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import caffe


def show_feature(data, padsize=1, padval=0):
    data -= data.min()
    data /= data.max()
    # force the number of filters to be square
    n = int(np.ceil(np.sqrt(data.shape[0])))
    padding = ((0, n ** 2 - data.shape[0]), (0, padsize), (0, padsize)) + ((0, 0),) * (data.ndim - 3)
    data = np.pad(data, padding, mode='constant', constant_values=(padval, padval))
    # tile the filters into an image
    data = data.reshape((n, n) + data.shape[1:]).transpose((0, 2, 1, 3) + tuple(range(4, data.ndim + 1)))
    data = data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])
    plt.imshow(data)
    plt.axis('off')


def mainex():
    caffe_root = os.environ["MODELS"] + "/"
    plt.rcParams['figure.figsize'] = (8, 8)
    plt.rcParams['image.interpolation'] = 'nearest'
    plt.rcParams['image.cmap'] = 'gray'
    caffe.set_mode_cpu()
    net = caffe.Net(caffe_root + 'cifar10_quick/cifar10_quick_train_test.prototxt',
                    caffe_root + 'cifar10_quick/cifar10_quick_iter_4000.caffemodel',
                    caffe.TEST)
    print([(k, v[0].data.shape) for k, v in net.params.items()])
    print([(k, v.data.shape) for k, v in net.blobs.items()])

    # classify the images before looking at the filters (show_feature edits them in place)
    x = np.load(os.environ["INPUT"])
    net.blobs['data'].reshape(*x.shape)
    net.blobs['data'].data[...] = x
    out = net.forward()
    np.save(os.environ["OUT"] + "/ip2.npy", out['ip2'])
    np.save(os.environ["OUT"] + "/conv1.npy", net.blobs['conv1'].data)
    print('predicted classes:', out['ip2'].argmax(axis=1))

    weight = net.params["conv1"][0].data
    print(weight.shape)
    show_feature(weight.transpose(0, 2, 3, 1))
    plt.savefig(os.environ["OUT"] + "/conv1.png")
    weight = net.params["conv2"][0].data
    print(weight.shape)
    show_feature(weight.reshape(32 ** 2, 5, 5))
    plt.savefig(os.environ["OUT"] + "/conv2.png")
    weight = net.params["conv3"][0].data
    print(weight.shape)
    show_feature(weight.reshape(64 * 32, 5, 5)[:1024])
    plt.savefig(os.environ["OUT"] + "/conv3.png")
    # show_feature normalised the filters in place, as it does under real pycaffe
    print('conv1 range after show_feature:', float(net.params["conv1"][0].data.min()),
          float(net.params["conv1"][0].data.max()))


if __name__ == '__main__':
    mainex()
    sys.exit(0)
