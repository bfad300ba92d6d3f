"""Protocol-buffer wire-format encoding, for writing large messages as a stream."""
from __future__ import annotations


def enc_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_key(field: int, wire: int) -> bytes:
    return enc_varint(field << 3 | wire)


def len_field(field: int, payload_len: int) -> bytes:
    return field_key(field, 2) + enc_varint(payload_len)
