# Net surgery as pycaffe users write it: edit parameters in place, check that the
# next forward sees the edit, save, reload, and classify with caffe.Classifier.
# MODELS, IMAGE and OUT come from the environment.
import os

import numpy as np
import caffe

m = os.environ["MODELS"] + "/cifar10_quick/"
net = caffe.Net(m + 'cifar10_quick.prototxt', caffe.TEST, weights=m + 'cifar10_quick_iter_4000.caffemodel')
x = np.random.RandomState(0).uniform(-60, 60, net.blobs['data'].data.shape).astype(np.float32)
before = net.forward(data=x, blobs=['conv1'])['conv1'].copy()

# surgery: double conv1's filters and bias in place
net.params['conv1'][0].data[...] *= 2
net.params['conv1'][1].data[:] = net.params['conv1'][1].data * 2
after = net.forward(data=x, blobs=['conv1'])['conv1'].copy()
print('conv1 doubled:', np.allclose(after, 2 * before, rtol=1e-5, atol=1e-4))
np.save(os.environ["OUT"] + "/before.npy", before)
np.save(os.environ["OUT"] + "/after.npy", after)

saved = os.environ["OUT"] + "/surgery.caffemodel"
net.save(saved)
net.save(os.environ["OUT"] + "/surgery.caffemodel.h5")
again = caffe.Net(m + 'cifar10_quick.prototxt', saved, caffe.TEST)
for name, blobs in net.params.items():
    for a, b in zip(blobs, again.params[name]):
        assert np.array_equal(a.data, b.data), name
print('reloaded bit-identically')

mean = caffe.io.blobproto_to_array(caffe.proto.caffe_pb2.BlobProto.FromString(
    open(m + 'mean.binaryproto', 'rb').read()))[0]
clf = caffe.Classifier(m + 'cifar10_quick.prototxt', saved, image_dims=(36, 36), mean=mean.mean(1).mean(1),
                       raw_scale=255, channel_swap=(2, 1, 0))
image = caffe.io.load_image(os.environ["IMAGE"])
probs = clf.predict([image, image[::-1]], oversample=True)
np.save(os.environ["OUT"] + "/probs.npy", probs)
print('classes:', probs.argmax(1), probs.shape)
