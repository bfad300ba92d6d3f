"""Caffe's protobuf schema, read from .proto text without a compiler.

BVLC's `proto/caffe.proto` is the base; each fork's fields live in their own file,
`proto/forks/FORK.proto`, which names its source: its new messages as written in the
fork, and what it adds to BVLC's messages as `extend Message { ... }` blocks (a fork
edits the message itself; the fields keep the fork's own numbers, so binary files the
fork wrote read the same). `tools/gen_proto.py` merges them into `zfcaffe/caffe_pb2.py`;
`use_proto(path)` merges a user's fork caffe.proto at run time (`--caffe-proto`).

Only what Caffe's schemas use is read: `syntax`, `package`, `import`/`option` (ignored),
messages with nested messages and enums, optional/required/repeated fields with
`[default = ..., packed = ..., deprecated = ...]`, `extend` and `reserved`/`extensions`
(ignored).
"""
from __future__ import annotations

import dataclasses
import re

from google.protobuf import descriptor_pb2

from ..errors import ZfcaffeError

FDP = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    "double": FDP.TYPE_DOUBLE, "float": FDP.TYPE_FLOAT, "int64": FDP.TYPE_INT64, "uint64": FDP.TYPE_UINT64,
    "int32": FDP.TYPE_INT32, "fixed64": FDP.TYPE_FIXED64, "fixed32": FDP.TYPE_FIXED32, "bool": FDP.TYPE_BOOL,
    "string": FDP.TYPE_STRING, "bytes": FDP.TYPE_BYTES, "uint32": FDP.TYPE_UINT32, "sfixed32": FDP.TYPE_SFIXED32,
    "sfixed64": FDP.TYPE_SFIXED64, "sint32": FDP.TYPE_SINT32, "sint64": FDP.TYPE_SINT64,
}
LABELS = {"optional": FDP.LABEL_OPTIONAL, "required": FDP.LABEL_REQUIRED, "repeated": FDP.LABEL_REPEATED}
#: field numbers given to a fork's field whose own number another fork took first
RENUMBER_BASE = 20000

_TOKEN = re.compile(r"""\s+|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[A-Za-z_][\w.]*|"""
                    r"""-?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[{}\[\]=;,<>()]""", re.S)


@dataclasses.dataclass
class _Tok:
    text: str
    line: int


def _tokens(text: str, path: str) -> list[_Tok]:
    out, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ZfcaffeError(f"{path}:{line}: unexpected character {text[pos]!r}; expected a .proto file")
        t = m.group(0)
        if not (t[0].isspace() or t.startswith(("//", "/*"))):
            out.append(_Tok(t, line))
        line += t.count("\n")
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, path: str):
        self.toks, self.i, self.path = _tokens(text, path), 0, path

    def error(self, what: str) -> ZfcaffeError:
        tok = self.toks[min(self.i, len(self.toks) - 1)] if self.toks else _Tok("", 1)
        return ZfcaffeError(f"{self.path}:{tok.line}: {what} (at '{tok.text}')")

    def peek(self) -> str:
        return self.toks[self.i].text if self.i < len(self.toks) else ""

    def take(self, expect: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise self.error(f"unexpected end of file; expected {expect or 'more'}")
        t = self.toks[self.i].text
        if expect is not None and t != expect:
            raise self.error(f"expected '{expect}'")
        self.i += 1
        return t

    def skip_statement(self) -> None:
        depth = 0
        while True:
            t = self.take()
            depth += t in "{[(" and len(t) == 1
            depth -= t in "}])" and len(t) == 1
            if depth <= 0 and t in (";", "}"):
                return

    # -- file level --------------------------------------------------------------------
    def file(self, fdp: descriptor_pb2.FileDescriptorProto, extends: list) -> None:
        while self.i < len(self.toks):
            t = self.take()
            if t == "syntax":
                self.take("=")
                fdp.syntax = self.take().strip("\"'")
                self.take(";")
            elif t == "package":
                fdp.package = self.take()
                self.take(";")
            elif t in ("import", "option"):
                self.skip_statement()
            elif t == "message":
                self.message(fdp.message_type.add())
            elif t == "enum":
                self.enum(fdp.enum_type.add())
            elif t == "extend":
                target = self.take()
                holder = descriptor_pb2.DescriptorProto(name=target)
                self.take("{")
                while self.peek() != "}":
                    self.field(holder)
                self.take("}")
                extends.append((target, holder, self.path))
            elif t == ";":
                continue
            else:
                self.i -= 1
                raise self.error("expected message, enum, extend, syntax, package, import or option")

    def message(self, msg: descriptor_pb2.DescriptorProto) -> None:
        msg.name = self.take()
        self.take("{")
        while self.peek() != "}":
            t = self.peek()
            if t == "message":
                self.take()
                self.message(msg.nested_type.add())
            elif t == "enum":
                self.take()
                self.enum(msg.enum_type.add())
            elif t in ("option", "reserved", "extensions"):
                self.skip_statement()
            elif t == ";":
                self.take()
            elif t in LABELS:
                self.field(msg)
            else:
                raise self.error(f"expected a field (optional/required/repeated) in message {msg.name}")
        self.take("}")

    def enum(self, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        enum.name = self.take()
        self.take("{")
        while self.peek() != "}":
            if self.peek() in ("option", "reserved"):
                self.skip_statement()
                continue
            if self.peek() == ";":
                self.take()
                continue
            value = enum.value.add(name=self.take())
            self.take("=")
            value.number = self._int(self.take())
            if self.peek() == "[":
                self.skip_statement()
            else:
                self.take(";")
        self.take("}")

    def field(self, msg: descriptor_pb2.DescriptorProto) -> None:
        label = self.take()
        if label not in LABELS:
            self.i -= 1
            raise self.error("expected optional, required or repeated")
        typ, name = self.take(), self.take()
        self.take("=")
        f = msg.field.add(name=name, number=self._int(self.take()), label=LABELS[label])
        if typ in SCALARS:
            f.type = SCALARS[typ]
        else:
            f.type_name = typ            # resolved once every file is read
        if self.peek() == "[":
            self.take()
            while True:
                key = self.take()
                self.take("=")
                value = self.take()
                if key == "default":
                    f.default_value = value[1:-1] if value[:1] in "\"'" else value
                elif key == "packed":
                    f.options.packed = value == "true"
                elif key == "deprecated":
                    f.options.deprecated = value == "true"
                if self.take() == "]":
                    break
        self.take(";")

    def _int(self, text: str) -> int:
        try:
            return int(text, 0)
        except ValueError:
            raise self.error("expected an integer") from None


def _index(messages, prefix: str, out: dict) -> None:
    for m in messages:
        full = f"{prefix}.{m.name}"
        out[full] = ("message", m)
        for e in m.enum_type:
            out[f"{full}.{e.name}"] = ("enum", e)
        _index(m.nested_type, full, out)


def _resolve(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    """Field type names -> fully qualified names, by protobuf's scoping rules."""
    names: dict = {}
    prefix = f".{fdp.package}" if fdp.package else ""
    _index(fdp.message_type, prefix, names)
    for e in fdp.enum_type:
        names[f"{prefix}.{e.name}"] = ("enum", e)

    def visit(messages, scope: str):
        for m in messages:
            full = f"{scope}.{m.name}"
            for f in m.field:
                if not f.type_name or f.type_name.startswith("."):
                    continue
                parts = full.split(".")
                for k in range(len(parts), 0, -1):
                    cand = ".".join(parts[:k] + [f.type_name])
                    if cand in names:
                        f.type_name = cand
                        f.type = FDP.TYPE_MESSAGE if names[cand][0] == "message" else FDP.TYPE_ENUM
                        break
                else:
                    raise ZfcaffeError(f"field '{m.name}.{f.name}' has unknown type '{f.type_name}'")
            visit(m.nested_type, full)
    visit(fdp.message_type, prefix)


def _find_message(fdp, dotted: str):
    for top in fdp.message_type:
        if top.name == dotted.split(".")[0]:
            m = top
            for part in dotted.split(".")[1:]:
                m = next((n for n in m.nested_type if n.name == part), None)
                if m is None:
                    return None
            return m
    return None


def parse_proto(text: str, path: str) -> tuple[descriptor_pb2.FileDescriptorProto, list]:
    """One .proto file: its descriptor (types unresolved) and its `extend` blocks."""
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe.proto")
    extends: list = []
    _Parser(text, path).file(fdp, extends)
    return fdp, extends


def merge(base: descriptor_pb2.FileDescriptorProto, other: descriptor_pb2.FileDescriptorProto,
          extends: list, notes: list[str], source: str) -> None:
    """Add a fork's messages and fields to the base schema (in place). A message the base
    has gains the fields it lacks (by name); a field number already taken there moves to
    a free number (text prototxts name fields, so they parse the same)."""
    def add_fields(target, fields, owner: str):
        have = {f.name for f in target.field}
        taken = {f.number for f in target.field}
        for f in fields:
            if f.name in have:
                continue
            g = target.field.add()
            g.CopyFrom(f)
            if g.number in taken:
                g.number = max(RENUMBER_BASE - 1, *taken) + 1
                notes.append(f"{source}: {owner}.{f.name} = {f.number} is taken in the schema already; "
                             f"numbered {g.number} here")
            taken.add(g.number)
            have.add(g.name)

    def add_message(container, msg, owner: str):
        mine = next((m for m in container if m.name == msg.name), None)
        if mine is None:
            container.add().CopyFrom(msg)
            return
        add_fields(mine, msg.field, f"{owner}{msg.name}")
        for nested in msg.nested_type:
            add_message(mine.nested_type, nested, f"{owner}{msg.name}.")
        for enum in msg.enum_type:
            _add_enum(mine.enum_type, enum)

    for msg in other.message_type:
        add_message(base.message_type, msg, "")
    for enum in other.enum_type:
        _add_enum(base.enum_type, enum)
    for target, holder, where in extends:
        msg = _find_message(base, target.split(".", 1)[1] if target.startswith("caffe.") else target)
        if msg is None:
            raise ZfcaffeError(f"{where}: 'extend {target}': no message {target} in the schema")
        add_fields(msg, holder.field, target)


def _add_enum(container, enum) -> None:
    mine = next((e for e in container if e.name == enum.name), None)
    if mine is None:
        container.add().CopyFrom(enum)
        return
    have = {v.name for v in mine.value}
    mine.value.extend(v for v in enum.value if v.name not in have)


def build_schema(base_text: str, base_path: str, forks: list[tuple[str, str]],
                 notes: list[str] | None = None) -> descriptor_pb2.FileDescriptorProto:
    """BVLC's caffe.proto merged with each fork file (path, text), types resolved."""
    notes = [] if notes is None else notes
    base, base_ext = parse_proto(base_text, base_path)
    if base_ext:
        raise ZfcaffeError(f"{base_path}: the base schema has 'extend' blocks; expected BVLC's caffe.proto")
    _resolve(base)
    for path, text in forks:
        other, ext = parse_proto(text, path)
        # resolve the fork's own references against base + fork
        probe = descriptor_pb2.FileDescriptorProto()
        probe.CopyFrom(base)
        merge(probe, other, ext, [], path)
        _resolve(probe)
        merge(base, _resolved_part(probe, other, ext), ext and _resolved_extends(probe, ext), notes, path)
    return base


def _resolved_part(merged, other, ext):
    """The fork's own messages as they stand, with types resolved, in `merged`."""
    part = descriptor_pb2.FileDescriptorProto()
    part.CopyFrom(other)
    for i, msg in enumerate(part.message_type):
        src = _find_message(merged, msg.name)
        _copy_types(msg, src)
    return part


def _copy_types(msg, src) -> None:
    by_name = {f.name: f for f in src.field}
    for f in msg.field:
        if f.name in by_name:
            f.type, f.type_name = by_name[f.name].type, by_name[f.name].type_name
            if not by_name[f.name].type_name:
                f.ClearField("type_name")
    for nested in msg.nested_type:
        sub = next(n for n in src.nested_type if n.name == nested.name)
        _copy_types(nested, sub)


def _resolved_extends(merged, ext):
    out = []
    for target, holder, where in ext:
        h = descriptor_pb2.DescriptorProto()
        h.CopyFrom(holder)
        _copy_types(h, _find_message(merged, target.split(".", 1)[1] if target.startswith("caffe.") else target))
        out.append((target, h, where))
    return out


# -- the schema zfcaffe reads with ----------------------------------------------------------
def _repo_proto_dir():
    import pathlib
    return pathlib.Path(__file__).resolve().parents[2] / "proto"


def shipped_schema(notes: list[str] | None = None) -> descriptor_pb2.FileDescriptorProto:
    """proto/caffe.proto merged with proto/forks/*.proto (what caffe_pb2.py holds)."""
    d = _repo_proto_dir()
    forks = [(str(p.relative_to(d.parent)), p.read_text()) for p in sorted((d / "forks").glob("*.proto"))]
    return build_schema((d / "caffe.proto").read_text(), "proto/caffe.proto", forks, notes)


def _classes(fdp: descriptor_pb2.FileDescriptorProto, pool) -> dict:
    from google.protobuf.internal import builder
    desc = pool.AddSerializedFile(fdp.SerializeToString())
    names: dict = {}
    builder.BuildMessageAndEnumDescriptors(desc, names)
    builder.BuildTopDescriptorsAndMessages(desc, "caffe_pb2", names)
    names["DESCRIPTOR"] = desc
    return names


def use_proto(path: str) -> list[str]:
    """Read with a fork's own caffe.proto from now on (`--caffe-proto FORK.proto`): its
    messages and fields join zfcaffe's schema (BVLC + the shipped forks), with no
    compiler. Returns notes (renumbered fields). Messages parsed before stay as they were."""
    from google.protobuf import descriptor_pool

    from .. import caffe_pb2
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ZfcaffeError(f"{path}: cannot read the schema ({e}); expected a fork's caffe.proto") from None
    other, ext = parse_proto(text, path)
    if other.package not in ("", "caffe"):
        raise ZfcaffeError(f"{path}: package '{other.package}'; expected Caffe's schema (package caffe)")
    base = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(base)
    notes: list[str] = []
    probe = descriptor_pb2.FileDescriptorProto()
    probe.CopyFrom(base)
    merge(probe, other, ext, [], path)
    _resolve(probe)
    merge(base, _resolved_part(probe, other, ext), _resolved_extends(probe, ext), notes, path)
    for name, value in _classes(base, descriptor_pool.DescriptorPool()).items():
        setattr(caffe_pb2, name, value)
    return notes
