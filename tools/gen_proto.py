"""Regenerate zfcaffe/caffe_pb2.py from proto/caffe.proto.

Needs grpcio-tools (it bundles protoc): pip install grpcio-tools.
Users never run this; the generated module is checked in.
"""
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    rc = protoc.main([
        "protoc",
        f"--proto_path={ROOT / 'proto'}",
        f"--python_out={ROOT / 'zfcaffe'}",
        str(ROOT / "proto" / "caffe.proto"),
    ])
    if rc == 0:
        print(f"wrote {ROOT / 'zfcaffe' / 'caffe_pb2.py'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
