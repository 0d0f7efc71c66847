"""The HPACK encoder of response heads (static table only, as nginx): what it makes decodes,
with ``hpack``'s decoder, to the fields given, in order, with their indexing."""

from __future__ import annotations

import pytest
from hpack import Decoder, NeverIndexedHeaderTuple

from edgeworker.http2 import encode
from edgeworker.http2.encode import ResponseEncoder, encode_field

HEAD = [
    (b":status", b"200"),
    (b"server", b"edgeworker"),
    (b"date", b"Mon, 07 Dec 2026 17:50:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"12"),
    (b"x-custom", b"v" * 300),
    (b"accept-encoding", b"gzip, deflate"),
]


def test_blocks_decode_to_the_fields_and_no_table_is_used():
    enc = ResponseEncoder()
    dec = Decoder()
    for n in range(3):
        rid = NeverIndexedHeaderTuple(b"x-request-id", b"%032x" % n)
        fields = [*HEAD, rid, (b"content-length", b"%d" % (n * 1000))]
        block = enc.encode(fields)
        assert block.startswith(b"\x20") == (n == 0)  # the table set to 0, once
        out = dec.decode(block, raw=True)
        assert [tuple(f) for f in out] == [tuple(f) for f in fields]
        assert [f.indexable for f in out] == [True] * len(HEAD) + [False, True]
        assert dec.header_table_size == 0 and len(dec.header_table.dynamic_entries) == 0


def test_representations():
    assert encode_field(b":status", b"200") == b"\x88"  # static index 8
    # name from the static table (content-length: 28), value as is (shorter than Huffman)
    assert encode_field(b"content-length", b"1") == b"\x0f\x0d\x011"
    # never indexed, new name, strings as they are
    assert encode_field(b"x-id", b"ab", never=True) == b"\x10\x04x-id\x02ab"
    # Huffman code when shorter
    coded = encode_field(b"x-long", b"a" * 40)
    assert coded[0] == 0 and coded[1] & 0x80 and len(coded) < 2 + 6 + 1 + 40


def test_long_lengths_use_the_integer_continuation():
    value = bytes(range(256)) * 2  # Huffman is longer: the value goes as it is
    out = Decoder().decode(encode_field(b"x-bin", value), raw=True)
    assert out == [(b"x-bin", value)]


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(encode, "CACHE_SIZE", 8)
    enc = ResponseEncoder()
    for n in range(50):
        enc.encode([(b"content-length", b"%d" % n)])
    assert len(encode._cache) <= 8


@pytest.mark.parametrize("size", [0, 100, 65536])
def test_any_table_size_the_client_allows_fits(size):
    enc = ResponseEncoder()
    enc.header_table_size = size
    assert enc.allowed == size and enc.header_table_size == 0
