"""HPACK for response heads, as nginx encodes them: the static table only.

The first header block of a connection sets the dynamic table's size to 0 (a dynamic table
size update, RFC 7541 §6.3); no field ever enters it. Each field is then encoded the same way
on every connection: the static table's index when name and value are there, else a literal
without indexing (the static table's index for the name when it has it), each string in
Huffman code when that is shorter. So the encoded bytes of a field depend on the field alone
and are kept (``CACHE_SIZE``): a response head is mostly a few dictionary look-ups. Fields the
caller marks never indexed (``hpack.NeverIndexedHeaderTuple``: the request id) are encoded as
such (RFC 7541 §6.2.3), without Huffman code and not kept, as their values do not repeat.

The request heads are decoded by ``hpack``'s decoder (the client's dynamic table), with the
usual field of a client whose table holds its fields, one byte indexing an entry, decoded
inline (``RequestDecoder``); every other representation and every check is ``hpack``'s."""

from __future__ import annotations

from typing import Any

from hpack import Decoder, HeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableIndex, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

__all__ = ["CACHE_SIZE", "RequestDecoder", "ResponseEncoder", "encode_field"]

#: encoded fields kept (worker-wide: the encoding depends on the field only); past it the
#: cache starts again
CACHE_SIZE = 4096
#: a dynamic table size update to 0: the first bytes of a connection's first header block
TABLE_SIZE_ZERO = b"\x20"

_huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode
_FULL: dict[tuple[bytes, bytes], int] = {}
_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _FULL.setdefault((_n, _v), _i)
    _NAME.setdefault(_n, _i)
_cache: dict[tuple[bytes, bytes], bytes] = {}


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """``value`` with an N-bit prefix (RFC 7541 §5.1), ``first``: the bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes, huffman: bool = True) -> bytes:
    """A string literal (RFC 7541 §5.2): Huffman code when shorter."""
    if huffman and data:
        coded = _huffman(data)
        if len(coded) < len(data):
            return _integer(len(coded), 7, 0x80) + coded
    return _integer(len(data), 7, 0) + data


def encode_field(name: bytes, value: bytes, never: bool = False) -> bytes:
    """One field's representation: indexed (static table), or a literal without indexing
    (``never``: never indexed, strings as they are)."""
    if not never:
        index = _FULL.get((name, value))
        if index is not None:
            return bytes((0x80 | index,))
    first = 0x10 if never else 0
    index = _NAME.get(name)
    if index is not None:
        head = _integer(index, 4, first)
    else:
        head = bytes((first,)) + _string(name, not never)
    return head + _string(value, not never)


class ResponseEncoder:
    """The ``encoder`` of one ``h2`` connection (``h2`` calls ``encode`` for each header block
    and sets ``header_table_size`` from the client's SETTINGS: no table is used, so any size
    the client allows fits)."""

    __slots__ = ("allowed", "first")

    def __init__(self) -> None:
        self.first = True
        self.allowed = 4096  # the table size the client allows (SETTINGS_HEADER_TABLE_SIZE)

    @property
    def header_table_size(self) -> int:
        """The size of the table used: 0, which fits any size the client allows."""
        return 0

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self.allowed = value

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        cache = _cache
        out = []
        if self.first:
            self.first = False
            out.append(TABLE_SIZE_ZERO)
        append = out.append
        for field in headers:
            if field.__class__ is tuple:
                coded = cache.get(field)
                if coded is None:
                    if len(cache) >= CACHE_SIZE:
                        cache.clear()
                    coded = cache[field] = encode_field(field[0], field[1])
                append(coded)
            else:  # a HeaderTuple: never indexed unless it says it may be
                append(encode_field(field[0], field[1], not getattr(field, "indexable", True)))
        return b"".join(out)


class RequestDecoder(Decoder):
    """``hpack``'s ``Decoder`` (as ``h2`` uses it: ``raw``), with one-byte indexed fields
    decoded inline; the same headers, table and errors as ``hpack``'s own loop."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if not raw:
            return super().decode(data, raw)
        static = HeaderTable.STATIC_TABLE
        n_static = len(static)
        dynamic = self.header_table.dynamic_entries
        limit = self.max_header_list_size
        mem = memoryview(data)
        headers: list = []
        size = 0
        pos = 0
        end = len(data)
        while pos < end:
            byte = data[pos]
            if 0x80 < byte < 0xFF:  # indexed, the index (1 to 126) in this byte
                index = byte - 0x81
                if index < n_static:
                    header = HeaderTuple(*static[index])
                else:
                    index -= n_static
                    if index >= len(dynamic):
                        raise InvalidTableIndex(f"Invalid table index {byte & 0x7F}")
                    header = HeaderTuple(*dynamic[index])
                pos += 1
            elif byte & 0x80:  # index 0 (an error) or an index over several bytes
                header, used = self._decode_indexed(mem[pos:])
                pos += used
            elif byte & 0x40:
                header, used = self._decode_literal_index(mem[pos:])
                pos += used
            elif byte & 0x20:
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                pos += self._update_encoding_context(mem[pos:])
                continue
            else:
                header, used = self._decode_literal_no_index(mem[pos:])
                pos += used
            headers.append(header)
            size += 32 + len(header[0]) + len(header[1])
            if size > limit:
                raise OversizedHeaderListError(
                    f"A header list larger than {limit} has been received"
                )
        self._assert_valid_table_size()
        return headers
