"""Write a fork's schema delta for proto/forks/: what a fork's caffe.proto adds to BVLC's.

    python tools/fork_delta.py FORK_caffe.proto "weiliu89/caffe@4817bf8b src/caffe/proto/caffe.proto" > proto/forks/ssd.proto

Messages new in the fork are copied whole; fields added to BVLC's messages become
`extend Message { ... }` blocks (same names, numbers and defaults); values added to a
BVLC enum are written as a partial enum inside its message. Fields are not judged:
trim what only trains, if you like, and keep the header naming the source.
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.protobuf import descriptor_pb2  # noqa: E402

from zfcaffe.io.schema import LABELS, SCALARS, parse_proto  # noqa: E402

_LABEL = {v: k for k, v in LABELS.items()}
_SCALAR = {v: k for k, v in SCALARS.items()}


def _field(f, indent: str) -> str:
    typ = f.type_name or _SCALAR[f.type]
    opts = []
    if f.HasField("default_value"):
        quoted = f.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING
        opts.append(f'default = "{f.default_value}"' if quoted else f"default = {f.default_value}")
    if f.options.HasField("packed"):
        opts.append(f"packed = {str(f.options.packed).lower()}")
    if f.options.HasField("deprecated"):
        opts.append(f"deprecated = {str(f.options.deprecated).lower()}")
    tail = f" [{', '.join(opts)}]" if opts else ""
    return f"{indent}{_LABEL[f.label]} {typ} {f.name} = {f.number}{tail};"


def _enum(e, indent: str, values=None) -> list[str]:
    vals = e.value if values is None else values
    return [f"{indent}enum {e.name} {{"] + [f"{indent}  {v.name} = {v.number};" for v in vals] + [f"{indent}}}"]


def _message(m, indent: str = "") -> list[str]:
    out = [f"{indent}message {m.name} {{"]
    for e in m.enum_type:
        out += _enum(e, indent + "  ")
    for n in m.nested_type:
        out += _message(n, indent + "  ")
    out += [_field(f, indent + "  ") for f in m.field]
    return out + [f"{indent}}}"]


def delta(base, fork) -> list[str]:
    out: list[str] = []

    def visit(base_msgs, fork_msgs, path: str):
        for m in fork_msgs:
            full = f"{path}{m.name}"
            b = next((x for x in base_msgs if x.name == m.name), None)
            if b is None:
                wrap = path[:-1]
                out.extend(_message(m) if not wrap else [f"message {wrap} {{"] + _message(m, "  ") + ["}"])
                out.append("")
                continue
            have = {f.name for f in b.field}
            new = [f for f in m.field if f.name not in have]
            if new:
                out.append(f"extend {full} {{")
                out.extend(_field(f, "  ") for f in new)
                out.extend(["}", ""])
            for e in m.enum_type:
                be = next((x for x in b.enum_type if x.name == e.name), None)
                names = {v.name for v in be.value} if be else set()
                added = [v for v in e.value if v.name not in names]
                if added:
                    out.extend([f"message {full} {{"] + _enum(e, "  ", added) + ["}", ""])
            visit(b.nested_type, m.nested_type, full + ".")

    visit(base.message_type, fork.message_type, "")
    for e in fork.enum_type:
        if not any(x.name == e.name for x in base.enum_type):
            out += _enum(e, "") + [""]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, source = argv
    base, _ = parse_proto((ROOT / "proto/caffe.proto").read_text(), "proto/caffe.proto")
    fork, _ = parse_proto(pathlib.Path(path).read_text(), path)
    lines = [f"// What {source} adds to BVLC Caffe's caffe.proto",
             "// (written by tools/fork_delta.py; read by zfcaffe/io/schema.py, merged by tools/gen_proto.py).",
             'syntax = "proto2";', "package caffe;", ""] + delta(base, fork)
    print("\n".join(lines).rstrip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
