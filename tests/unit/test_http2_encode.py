"""HPACK: the encoder of response heads (static table only, as nginx): what it makes decodes,
with ``hpack``'s decoder, to the fields given, in order, with their indexing; the request
decoder gives what ``hpack``'s gives, and refuses what it refuses."""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableIndex, OversizedHeaderListError

from edgeworker.http2 import encode
from edgeworker.http2.encode import RequestDecoder, ResponseEncoder, encode_field

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


def _blocks():
    """Header blocks as a client makes them: table entries added, then referenced; Huffman and
    plain strings; never-indexed fields; a table size update; indexes over one byte."""
    enc = Encoder()
    req = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/a"), (b"x-k", b"v")]
    yield enc.encode(req)
    yield enc.encode(req)  # every field indexed now
    many = [(b"x-%d" % i, b"%d" % i) for i in range(80)]  # entries past index 126
    yield enc.encode(req + many)
    yield enc.encode(many[:3] + req)
    yield enc.encode([*req, NeverIndexedHeaderTuple(b"authorization", b"secret")], huffman=False)
    enc.header_table_size = 256  # a size update first, entries evicted
    yield enc.encode(req + many[:5])


def test_the_request_decoder_decodes_as_hpack_does():
    ours, theirs = RequestDecoder(), Decoder()
    for block in _blocks():
        got = ours.decode(block, raw=True)
        want = theirs.decode(block, raw=True)
        assert got == want
        assert [type(h) for h in got] == [type(h) for h in want]
        assert list(ours.header_table.dynamic_entries) == list(theirs.header_table.dynamic_entries)
        assert ours.header_table_size == theirs.header_table_size


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x80", InvalidTableIndex),  # index 0
        (b"\xbe", InvalidTableIndex),  # index 62: an empty dynamic table
        (b"\x82\x3f\xe1\x1f", HPACKDecodingError),  # a size update after a field
    ],
)
def test_the_request_decoder_refuses_what_hpack_refuses(block, error):
    with pytest.raises(error):
        RequestDecoder().decode(block, raw=True)
    with pytest.raises(error):
        Decoder().decode(block, raw=True)


def test_the_request_decoder_bounds_the_header_list():
    dec = RequestDecoder()
    dec.max_header_list_size = 200
    block = Encoder().encode([(b"x-big", b"b" * 100)]) + b"\xbe" * 5  # one entry, referenced
    with pytest.raises(OversizedHeaderListError):
        dec.decode(block, raw=True)
