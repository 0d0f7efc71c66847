"""gzip and brotli end to end: a real `edgeworker run`, real clients (http.client, raw sockets,
curl --compressed), bodies decompressed and compared byte for byte with the uncompressed ones.

Proxied responses come from a real edgeworker backend (gzip off) and from the backend process
of the proxy tests (tests/backends/http_backend.py) for the big body."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import time
import zlib

import pytest

from ..backends import Backend
from ..support import Server, read_all

brotli = pytest.importorskip("brotli")

# a text that compresses, but not to nothing: lines with numbers
TEXT = "".join(
    f"line {i}: the quick brown fox jumps over the lazy dog {i * i}\n" for i in range(400)
)

APP = """
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * i}\\n"
               for i in range(400))

def text(req):
    return TEXT

def gen(req):
    def pieces():
        for i in range(0, len(TEXT), 1000):
            yield TEXT[i:i + 1000]
    return pieces()

def small(req):
    return "x" * 50

def png(req):
    req.content_type = "image/png"
    return TEXT

def json_doc(req):
    return {"text": TEXT}

def encoded(req):
    req.resp_headers["Content-Encoding"] = "identity-but-set"
    return TEXT

def status(req):
    code = int(req.uri.rsplit("/", 1)[1])
    req.exit(code, TEXT if code not in (204, 304) else None, content_type="text/plain")

def etag(req):
    req.resp_headers["ETag"] = '"v1"'
    req.resp_headers["Accept-Ranges"] = "bytes"
    return TEXT

def nostore(req):
    req.resp_headers["Cache-Control"] = "private, no-store"
    return TEXT

def saw(req):
    req.resp_headers["X-Saw-Encoding"] = req.resp_headers.get("Content-Encoding", "none")

def upper(req, chunk, eof):
    return chunk.upper()

def stream_n(req):
    n = int(req.args.get("n", "0"))
    block = (TEXT * (1 + (1 << 20) // len(TEXT)))[: 1 << 20].encode()
    def pieces():
        left = n
        while left > 0:
            piece = block if left >= len(block) else block[:left]
            left -= len(piece)
            yield piece
    return pieces()
"""

CONFIG = """
[http]
gzip = true
gzip_types = ["text/plain", "application/json"]

[[server]]
listen = "127.0.0.1:{port}"
gzip_min_length = 100

[[server.location]]
match = "/text"
content = "app:text"

[[server.location]]
match = "/gen"
content = "app:gen"

[[server.location]]
match = "/small"
content = "app:small"

[[server.location]]
match = "/off"
content = "app:text"
gzip = false

[[server.location]]
match = "/png"
content = "app:png"

[[server.location]]
match = "/json"
content = "app:json_doc"

[[server.location]]
match = "/encoded"
content = "app:encoded"

[[server.location]]
match = "/status/"
content = "app:status"

[[server.location]]
match = "/etag"
content = "app:etag"

[[server.location]]
match = "/filtered"
content = "app:text"
header_filter = "app:saw"
body_filter = "app:upper"

[[server.location]]
match = "/http10"
content = "app:gen"
gzip_http_version = "1.0"

[[server.location]]
match = "/br"
content = "app:text"
brotli = true
brotli_types = "text/plain"

[[server.location]]
match = "/brgen"
content = "app:gen"
brotli = true
brotli_types = "text/plain"

[[server.location]]
match = "/via/nostore"
content = "app:nostore"
gzip_proxied = ["no-store"]

[[server.location]]
match = "/via/any"
content = "app:text"
gzip_proxied = "any"

[[server.location]]
match = "/disable"
content = "app:text"
gzip_disable = ["^Old"]

[[server.location]]
match = "/static/"
root = "{dir}/www"

[[server.location]]
match = "/up/"
proxy_pass = "http://{backend}/"

[[server.location]]
match = "/big/"
proxy_pass = "http://{raw_backend}/"
gzip_types = "*"

[[server.location]]
match = "/stream"
content = "app:stream_n"
"""

BACKEND = """
[[server]]
listen = "127.0.0.1:{port}"

[[server.location]]
match = "/"
content = "app:text"

[[server.location]]
match = "/gen"
content = "app:gen"
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compress")
    backend = Server(tmp / "backend", BACKEND, {"app.py": APP}).start()
    raw_backend = Backend("raw")
    www = tmp / "front" / "www" / "static"  # root + URI, as nginx
    www.mkdir(parents=True)
    (www / "small.txt").write_text(TEXT)
    (www / "big.txt").write_text(TEXT * 10)  # 250 KB: sent with sendfile when not compressed
    (www / "pic.png").write_bytes(os.urandom(5000))
    text = CONFIG.replace("{backend}", f"127.0.0.1:{backend.port}").replace(
        "{raw_backend}", raw_backend.addr
    )
    front = Server(tmp / "front", text, {"app.py": APP})
    front.start()
    yield front
    front.stop()
    backend.stop()
    raw_backend.stop()


GZ = {"Accept-Encoding": "gzip"}


def gunzip(data: bytes) -> bytes:
    return gzip.decompress(data)


def get(srv, path, headers=None, method="GET"):
    return srv.request(method, path, headers=headers if headers is not None else GZ)


# ------------------------------------------------------------------ compressed
def test_whole_body_exact_length(srv):
    status, h, body = get(srv, "/text")
    assert status == 200
    assert h["content-encoding"] == "gzip"
    assert h["vary"] == "Accept-Encoding"
    assert int(h["content-length"]) == len(body) < len(TEXT)
    assert "transfer-encoding" not in h
    assert gunzip(body) == TEXT.encode()


def test_generator_body_streamed(srv):
    status, h, body = get(srv, "/gen")
    assert status == 200
    assert h["content-encoding"] == "gzip"
    assert h["transfer-encoding"] == "chunked"
    assert "content-length" not in h
    assert gunzip(body) == TEXT.encode()


def test_each_chunk_is_flushed(srv):
    # every piece the generator yields reaches the client as it goes: each chunk inflates on
    # its own (Z_SYNC_FLUSH), without the end of the stream
    raw = srv.raw(
        b"GET /gen HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    assert len(chunks) >= 10
    d = zlib.decompressobj(31)
    first = d.decompress(chunks[0]) + d.decompress(chunks[1])
    assert TEXT.encode().startswith(first) and len(first) >= 1000


def test_json_and_filters_see_uncompressed(srv):
    status, h, body = get(srv, "/json")
    assert h["content-encoding"] == "gzip" and gunzip(body).startswith(b'{"text":"line 0')
    status, h, body = get(srv, "/filtered")
    assert h["x-saw-encoding"] == "none"  # header_filter ran before compression
    assert h["content-encoding"] == "gzip"
    assert gunzip(body) == TEXT.upper().encode()  # body_filter saw the plain text


def test_weak_etag_no_accept_ranges(srv):
    status, h, body = get(srv, "/etag")
    assert h["content-encoding"] == "gzip"
    assert h["etag"] == 'W/"v1"'
    assert "accept-ranges" not in h
    status, h, body = get(srv, "/etag", headers={})
    assert h["etag"] == '"v1"' and h["accept-ranges"] == "bytes"
    assert h["vary"] == "Accept-Encoding" and "content-encoding" not in h


def test_head_gets_the_head_of_get(srv):
    _, hg, body = get(srv, "/text")
    status, hh, hbody = get(srv, "/text", method="HEAD")
    assert status == 200 and hbody == b""
    for name in ("content-encoding", "vary", "content-length", "content-type"):
        assert hh[name] == hg[name], name
    # a streamed body: the same coding and framing, no body
    status, hh, _ = get(srv, "/gen", method="HEAD")
    assert hh["content-encoding"] == "gzip" and hh["vary"] == "Accept-Encoding"


def test_status_codes(srv):
    for code in (201, 404, 500):
        status, h, body = get(srv, f"/status/{code}")
        assert status == code and h.get("content-encoding") == "gzip", code
        assert gunzip(body) == TEXT.encode()
    for code in (204, 304):
        status, h, body = get(srv, f"/status/{code}")
        assert status == code and "content-encoding" not in h and body == b""


def test_accept_encoding_parsing(srv):
    cases = {
        "gzip": True,
        "GZip ;  q=0.5": True,
        "deflate, *": True,
        "*;q=0.1": True,
        "x-gzip": True,
        "gzip;q=0": False,
        "gzip;q=0.000, br": False,
        "*;q=0": False,
        "identity": False,
        "deflate": False,
        "": False,
    }
    for value, compressed in cases.items():
        _, h, body = get(srv, "/text", headers={"Accept-Encoding": value})
        assert ("content-encoding" in h) == compressed, value
        assert h["vary"] == "Accept-Encoding"
        assert (gunzip(body) if compressed else body) == TEXT.encode()
    _, h, body = get(srv, "/text", headers={})
    assert "content-encoding" not in h and body == TEXT.encode()


# ------------------------------------------------------------------ not compressed
def test_not_compressed(srv):
    # too short (gzip_min_length of the server), off in the location, a type not listed,
    # already encoded: no Content-Encoding; Vary only where the response could be compressed
    _, h, body = get(srv, "/small")
    assert "content-encoding" not in h and "vary" not in h and body == b"x" * 50
    _, h, body = get(srv, "/off")
    assert "content-encoding" not in h and "vary" not in h and body == TEXT.encode()
    _, h, body = get(srv, "/png")
    assert "content-encoding" not in h and "vary" not in h and body == TEXT.encode()
    _, h, body = get(srv, "/encoded")
    assert h["content-encoding"] == "identity-but-set" and body == TEXT.encode()


def test_http10_client(srv):
    # gzip_http_version "1.1" (the default): an HTTP/1.0 request is answered plain
    req = b"GET /gen HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n"
    raw = srv.raw(req)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding" not in head and body == TEXT.encode()
    # "1.0": a streamed body compressed and delimited by the close
    raw = srv.raw(req.replace(b"/gen", b"/http10"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert b"Connection: close" in head
    assert gunzip(body) == TEXT.encode()


def test_proxied_request_via(srv):
    via = {"Accept-Encoding": "gzip", "Via": "1.1 cache"}
    _, h, body = get(srv, "/text", headers=via)  # gzip_proxied off
    assert "content-encoding" not in h and h["vary"] == "Accept-Encoding"
    _, h, body = get(srv, "/via/any", headers=via)
    assert h["content-encoding"] == "gzip"
    _, h, body = get(srv, "/via/nostore", headers=via)  # Cache-Control: private, no-store
    assert h["content-encoding"] == "gzip" and gunzip(body) == TEXT.encode()


def test_gzip_disable(srv):
    for agent in ("Oldie/1", "OLDIE/2"):  # case-insensitive, as nginx
        _, h, _ = get(srv, "/disable", headers={"Accept-Encoding": "gzip", "User-Agent": agent})
        assert "content-encoding" not in h
    _, h, _ = get(srv, "/disable", headers={"Accept-Encoding": "gzip", "User-Agent": "New/1"})
    assert h["content-encoding"] == "gzip"


# ------------------------------------------------------------------ brotli
def test_brotli_preferred_on_equal_q(srv):
    _, h, body = get(srv, "/br", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert h["content-encoding"] == "br" and int(h["content-length"]) == len(body)
    assert brotli.decompress(body) == TEXT.encode()
    _, h, body = get(srv, "/br", headers={"Accept-Encoding": "gzip;q=1, br;q=0.5"})
    assert h["content-encoding"] == "gzip" and gunzip(body) == TEXT.encode()
    _, h, body = get(srv, "/br", headers={"Accept-Encoding": "br"})
    assert h["content-encoding"] == "br"
    _, h, body = get(srv, "/brgen", headers={"Accept-Encoding": "br"})
    assert h["content-encoding"] == "br" and h["transfer-encoding"] == "chunked"
    assert brotli.decompress(body) == TEXT.encode()


# ------------------------------------------------------------------ static and proxied
def test_static_files(srv):
    for name in ("small.txt", "big.txt"):
        expected = (srv.dir / "www" / "static" / name).read_bytes()
        _, h, body = get(srv, f"/static/{name}")
        assert h["content-encoding"] == "gzip", name
        assert h["etag"].startswith('W/"') and "accept-ranges" not in h
        assert gunzip(body) == expected
        _, h, body = get(srv, f"/static/{name}", headers={})
        assert body == expected and h["accept-ranges"] == "bytes"
        # a range request: not compressed (206)
        status, h, body = get(
            srv, f"/static/{name}", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-99"}
        )
        assert status == 206 and "content-encoding" not in h and body == expected[:100]
    _, h, body = get(srv, "/static/small.txt", method="HEAD")
    _, hg, _ = get(srv, "/static/small.txt")
    assert h["content-length"] == hg["content-length"] and h["content-encoding"] == "gzip"
    _, h, body = get(srv, "/static/pic.png")  # not a listed type: sent as is
    assert (
        "content-encoding" not in h
        and body == (srv.dir / "www" / "static" / "pic.png").read_bytes()
    )


def test_proxied_responses(srv):
    for path in ("/up/whole", "/up/gen"):
        _, h, body = get(srv, path)
        assert h["content-encoding"] == "gzip", path
        assert gunzip(body) == TEXT.encode(), path
    _, h, body = get(srv, "/up/whole", headers={})
    assert "content-encoding" not in h and body == TEXT.encode()


def test_curl_compressed(srv):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    for path in ("/text", "/gen", "/static/big.txt", "/up/gen"):
        out = subprocess.run(
            [
                curl,
                "-sS",
                "--noproxy",
                "*",
                "--compressed",
                "-D",
                "-",
                f"http://127.0.0.1:{srv.port}{path}",
            ],
            capture_output=True,
            timeout=20,
            check=True,
        ).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower(), path
        expected = (
            (srv.dir / "www" / "static" / "big.txt").read_bytes()
            if "big" in path
            else TEXT.encode()
        )
        assert body == expected, path


def _rss_peak(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("path", ["/big/big?n=268435456", "/stream?n=268435456"])
def test_huge_streamed_body_flat_memory(srv, path):
    # 256 MiB compressed on the fly (proxied with a Content-Length, or generated): the
    # worker's peak memory grows by far less than the body
    (worker,) = srv.worker_pids()
    before = _rss_peak(worker)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        s.settimeout(60)
        d = zlib.decompressobj(31)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
        total = 0
        pending = rest
        while True:  # de-chunk and inflate as it comes
            while b"\r\n" not in pending:
                pending += s.recv(65536)
            size_line, _, pending = pending.partition(b"\r\n")
            size = int(size_line, 16)
            while len(pending) < size + 2:
                more = s.recv(1 << 20)
                assert more, "cut"
                pending += more
            if size == 0:
                break
            total += len(d.decompress(pending[:size]))
            pending = pending[size + 2 :]
        total += len(d.flush())
    assert total == 268435456
    assert d.eof
    assert time.monotonic() - t0 < 60
    grown = _rss_peak(worker) - before
    assert grown < 32 << 20, f"peak RSS grew by {grown >> 20} MiB"


def test_keepalive_after_compressed_stream(srv):
    # a compressed chunked body ends properly: the connection serves the next request
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        req = b"GET /gen HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
        s.sendall(
            req
            + req.replace(b"/gen", b"/text").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        data = read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.count(b"Content-Encoding: gzip") == 2
