"""Text NetParameter reading with line numbers for every layer.

The file is split into its top-level entries first (a small scanner that knows
strings and comments), so that each layer is parsed on its own: an error names the
layer and its line, and a fork-only field in one layer does not hide the others.
"""
from __future__ import annotations

import dataclasses
import re

from google.protobuf import text_format

from .. import caffe_pb2
from ..errors import UnsupportedLayerError, ZfcaffeError

_LAYER_FIELDS = ("layer", "layers")


@dataclasses.dataclass
class TextEntry:
    field: str        # top-level field name: "layer", "layers", "input", "name", ...
    text: str         # the entry's text, from its field name to its end
    line: int         # 1-based line of the field name
    col: int          # 0-based column of the field name
    offset: int       # character offset in the file


def read_text(path: str) -> str:
    """Read a text file, refusing empty and binary files with a clear message."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ZfcaffeError(f"{path}: cannot read: {e.strerror}") from None
    if not raw.strip():
        raise ZfcaffeError(f"{path}: file is empty; expected a text prototxt")
    if b"\x00" in raw[:4096]:
        raise ZfcaffeError(
            f"{path}: looks like a binary file (NUL bytes); expected a text prototxt "
            "(a .caffemodel goes in the weights argument)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ZfcaffeError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); expected a text prototxt") from None


def split_entries(text: str, path: str) -> list[TextEntry]:
    """Split protobuf text into its top-level entries without parsing them."""
    entries: list[TextEntry] = []
    i, n = 0, len(text)
    line, line_start = 1, 0
    depth = 0
    start = None  # (offset, line, col) of the current entry
    field = ""

    def begin(pos: int) -> None:
        nonlocal start, field
        j = pos
        while j < n and (text[j].isalnum() or text[j] in "_."):
            j += 1
        start = (pos, line, pos - line_start)
        field = text[pos:j]

    expect_value = False  # after "name:" at depth 0 we wait for the scalar value
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            line_start = i + 1
            i += 1
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "\"'":
            q = c
            i += 1
            while i < n and text[i] != q:
                if text[i] == "\\":
                    i += 1
                if i < n and text[i] == "\n":
                    raise ZfcaffeError(f"{path}:{line}: unterminated string")
                i += 1
            i += 1
            if depth == 0 and expect_value:
                entries.append(_entry(text, start, i, field))
                start, expect_value = None, False
            continue
        if c.isspace():
            i += 1
            continue
        if c in "{<":
            depth += 1
            i += 1
            continue
        if c in "}>":
            depth -= 1
            if depth < 0:
                raise ZfcaffeError(f"{path}:{line}:{i - line_start + 1}: unmatched '{c}'")
            i += 1
            if depth == 0 and start is not None:
                entries.append(_entry(text, start, i, field))
                start = None
            continue
        if depth == 0:
            if start is None:
                begin(i)
                i += len(field) or 1
                continue
            if c == ":":
                expect_value = True
                i += 1
                continue
            if expect_value:
                # unquoted scalar value: up to whitespace or a comment
                j = i
                while j < n and not text[j].isspace() and text[j] not in "#{":
                    j += 1
                entries.append(_entry(text, start, j, field))
                start, expect_value = None, False
                i = j
                continue
        i += 1
    if depth > 0 and start is not None:
        raise ZfcaffeError(
            f"{path}:{start[1]}:{start[2] + 1}: '{field}' block is never closed (missing '}}')")
    if start is not None:
        raise ZfcaffeError(f"{path}:{start[1]}:{start[2] + 1}: incomplete entry '{field}'")
    return entries


def _entry(text: str, start, end: int, field: str) -> TextEntry:
    off, line, col = start
    return TextEntry(field, text[off:end], line, col, off)


def _parse_into(message, entry: TextEntry, path: str) -> None:
    # The entry alone (linear in the file's size), its first line indented as in the
    # file so that columns agree; protobuf's line numbers are then shifted to the file's.
    try:
        text_format.Merge(" " * entry.col + entry.text, message)
    except text_format.ParseError as e:
        raise ZfcaffeError(f"{path}:{_location(e, entry.line - 1)}: {_reason(e)}") from None


def _location(e: text_format.ParseError, line_offset: int = 0) -> str:
    line, col = e.GetLine(), e.GetColumn()
    if line is None:
        return "?"
    return f"{line + line_offset}:{col}" if col is not None else f"{line + line_offset}"


def _reason(e: text_format.ParseError) -> str:
    msg = str(e)
    # protobuf prefixes "line:col : "; keep only the reason.
    if " : " in msg:
        msg = msg.split(" : ", 1)[1]
    return msg


@dataclasses.dataclass
class ParsedNet:
    """A NetParameter as written, with the source line of each layer."""
    param: caffe_pb2.NetParameter
    path: str
    layer_lines: list[int]            # line of param.layer[i] (or param.layers[i])
    rejected: dict[int, tuple[str, str]]  # source line -> (type, why protobuf rejected the layer)


def _scan_name_type(text: str) -> tuple[str, str]:
    """Best-effort name and type of a layer block that protobuf could not parse."""
    name = re.search(r'\bname\s*:\s*"([^"]*)"', text)
    typ = re.search(r'\btype\s*:\s*"?([A-Za-z0-9_]+)"?', text)
    return (name.group(1) if name else "?"), (typ.group(1) if typ else "?")


def parse_net_text(path: str, text: str | None = None) -> ParsedNet:
    """Parse a prototxt into a NetParameter, remembering each layer's line.

    A layer block with a field BVLC Caffe does not know (fork-only layers such as
    ROIPooling) is kept as a name/type placeholder and listed in `rejected`; the
    graph builder reports it when it is reached, so a net can still be loaded up
    to the layer before it.
    """
    if text is None:
        text = read_text(path)
    net = caffe_pb2.NetParameter()
    lines: list[int] = []
    rejected: dict[int, str] = {}
    first_of: dict[str, int] = {}
    for entry in split_entries(text, path):
        if entry.field in _LAYER_FIELDS:
            first_of.setdefault(entry.field, entry.line)
            if len(first_of) == 2:
                v1 = first_of["layers"]
                raise ZfcaffeError(
                    f"{path}:{v1 if entry.field == 'layers' else entry.line}: "
                    + ("a V1 'layers { }' block in a V2 file (whose layers are 'layer { }'); Caffe refuses "
                       "the mix: write it as 'layer { }' with a string type (V1 RELU is \"ReLU\", "
                       "CONVOLUTION \"Convolution\", ...)" if first_of["layer"] < v1 else
                       "a V2 'layer { }' block in a V1 file (whose layers are 'layers { }'); Caffe refuses "
                       "the mix: write every layer in one format"))
        if entry.field not in _LAYER_FIELDS:
            _parse_into(net, entry, path)
            continue
        probe = caffe_pb2.NetParameter()
        container = net.layer if entry.field == "layer" else net.layers
        try:
            _parse_into(probe, entry, path)
            container.add().CopyFrom(getattr(probe, entry.field)[0])
        except ZfcaffeError as e:
            if "no field named" not in str(e):
                raise                      # a typo or a bad value, not a fork's field: say where
            name, typ = _scan_name_type(entry.text)
            placeholder = container.add()
            placeholder.name = name
            if entry.field == "layer":
                placeholder.type = typ
            rejected[entry.line] = (typ, str(e))
        lines.append(entry.line)
    return ParsedNet(net, path, lines, rejected)


def parse_message_text(path: str, message) -> None:
    """Parse a whole text file into `message` (solvers, small files)."""
    text = read_text(path)
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as e:
        raise ZfcaffeError(f"{path}:{_location(e)}: {_reason(e)}") from None


def fork_layer_error(path: str, name: str, typ: str, line: int, reason: str) -> UnsupportedLayerError:
    field = re.search(r'no field named "(\w+)"', reason)
    what = (f"uses field '{field.group(1)}', which neither BVLC Caffe nor a fork zfcaffe knows has"
            if field else f"does not parse: {reason.split(': ', 1)[-1].rstrip('.')}")
    return UnsupportedLayerError(
        f"{path}:{line}: layer '{name}' (type {typ}) {what}; read it with the fork's own schema "
        f"(CLI: --caffe-proto FORK/caffe.proto; zfcaffe.io.schema.use_proto(path)), or load the net up to "
        f"the layer before it with stop_before='{name}' (CLI: --stop-before {name})", name, typ)
