"""Readers for Caffe's files: prototxt, caffemodel (binary, HDF5), mean files, solvers."""
