"""caffe.proto: Caffe's protobuf schema (caffe.proto.caffe_pb2)."""
from ... import caffe_pb2  # noqa: F401
