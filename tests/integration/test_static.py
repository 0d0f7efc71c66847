"""`root`: static files served by a real `edgeworker run`, checked over loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

from edgeworker.http.responses import http_date
from edgeworker.static import parse_range

from ..support import Server, read_all

APP = '''
def upper(req, chunk, eof):
    return chunk.upper()
'''

CONFIG = '''
[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  match = "/"
  root = "{dir}/www"

  [[server.location]]
  match = "/filtered/"
  root = "{dir}/www"
  body_filter = "app:upper"

  [[server.location]]
  match = "/idx/"
  root = "{dir}/www"
  index = ["home.htm", "index.html"]
'''

BIG = 5 * 1024 * 1024 + 123


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("static")
    www = base / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>home</h1>\n")
    (www / "style.css").write_text("body{}\n")
    (www / "data.json").write_text('{"a": 1}')
    (www / "image.png").write_bytes(b"\x89PNG fake")
    (www / "noext").write_text("plain")
    (www / "hello.txt").write_text("hello world\n")
    (www / "big.bin").write_bytes(os.urandom(BIG))
    (www / "sub").mkdir()
    (www / "sub" / "index.html").write_text("sub index\n")
    (www / "empty").mkdir()
    (www / "filtered").mkdir()
    (www / "filtered" / "a.txt").write_text("abc\n")
    (www / "filtered" / "big.txt").write_text("q" * 200_000)
    (www / "idx").mkdir()
    (www / "idx" / "home.htm").write_text("home.htm\n")
    (www / "idx" / "index.html").write_text("not me\n")
    outside = base / "secret.txt"
    outside.write_text("top secret\n")
    (www / "escape.txt").symlink_to(outside)
    (www / "escapedir").symlink_to(base)
    (www / "inside-link.txt").symlink_to(www / "hello.txt")
    server = Server(base, CONFIG, {"app.py": APP}, workers=1).start()
    server.www = www
    yield server
    server.stop()


def test_file_with_mime_type_etag_last_modified(srv):
    status, h, body = srv.get("/hello.txt")
    assert status == 200 and body == b"hello world\n"
    assert h["content-type"] == "text/plain"
    st = os.stat(srv.www / "hello.txt")
    assert h["etag"] == f'"{int(st.st_mtime):x}-{st.st_size:x}"'
    assert h["last-modified"] == http_date(st.st_mtime)
    assert h["content-length"] == "12"
    assert h["accept-ranges"] == "bytes"
    for path, ctype in (("/style.css", "text/css"), ("/data.json", "application/json"),
                        ("/image.png", "image/png"), ("/index.html", "text/html"),
                        ("/big.bin", "application/octet-stream")):
        assert srv.get(path)[1]["content-type"] == ctype, path


def test_unknown_extension_gets_default_type(srv):
    status, h, body = srv.get("/noext")
    assert status == 200 and h["content-type"] == "text/plain" and body == b"plain"


def test_index_files(srv):
    assert srv.get("/")[2] == b"<h1>home</h1>\n"
    assert srv.get("/sub/")[2] == b"sub index\n"
    assert srv.get("/idx/")[2] == b"home.htm\n"  # the first existing index wins


def test_directory_without_slash_redirects(srv):
    status, h, _ = srv.get("/sub?x=1")
    assert status == 301 and h["location"] == "/sub/?x=1"


def test_directory_without_index_is_403_missing_is_404(srv):
    assert srv.get("/empty/")[0] == 403
    assert srv.get("/nothing.txt")[0] == 404
    assert srv.get("/nothing/")[0] == 404
    assert srv.get("/hello.txt/x")[0] == 404


def test_no_escape_from_root(srv):
    assert srv.get("/escape.txt")[0] == 403  # symlink pointing out of the root
    assert srv.get("/escapedir/secret.txt")[0] == 403
    assert srv.get("/inside-link.txt")[2] == b"hello world\n"  # symlink inside: fine
    for raw in (b"/../secret.txt", b"/%2e%2e/secret.txt", b"/sub/..%2f..%2fsecret.txt"):
        resp = srv.raw(b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"top secret" not in resp
        assert resp.split(b" ")[1] in (b"400", b"403", b"404"), resp[:40]


def test_conditional_requests_304(srv):
    _, h, _ = srv.get("/hello.txt")
    status, h2, body = srv.get("/hello.txt", headers={"If-None-Match": h["etag"]})
    assert status == 304 and body == b"" and h2["etag"] == h["etag"]
    status, _, _ = srv.get("/hello.txt", headers={"If-None-Match": '"other", ' + h["etag"]})
    assert status == 304
    assert srv.get("/hello.txt", headers={"If-None-Match": "*"})[0] == 304
    assert srv.get("/hello.txt", headers={"If-None-Match": '"nope"'})[0] == 200
    status, _, body = srv.get("/hello.txt", headers={"If-Modified-Since": h["last-modified"]})
    assert status == 304 and body == b""
    old = http_date(time.time() - 86400 * 400)
    assert srv.get("/hello.txt", headers={"If-Modified-Since": old})[0] == 200


def test_single_range_206(srv):
    data = (srv.www / "big.bin").read_bytes()
    status, h, body = srv.get("/big.bin", headers={"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert h["content-range"] == f"bytes 100-199/{BIG}"
    assert h["content-length"] == "100"
    status, h, body = srv.get("/big.bin", headers={"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, h, body = srv.get("/big.bin", headers={"Range": f"bytes={BIG - 5}-"})
    assert status == 206 and body == data[-5:]
    status, h, body = srv.get("/big.bin", headers={"Range": "bytes=1000000-"})
    assert status == 206 and body == data[1000000:]  # a big range: sendfile path
    status, h, body = srv.get("/hello.txt", headers={"Range": "bytes=0-1000"})
    assert status == 206 and body == b"hello world\n"  # end clamped to the size


def test_unsatisfiable_range_416(srv):
    status, h, _ = srv.get("/hello.txt", headers={"Range": "bytes=500-600"})
    assert status == 416 and h["content-range"] == "bytes */12"


def test_multiple_ranges_or_stale_if_range_give_the_whole_file(srv):
    status, h, body = srv.get("/hello.txt", headers={"Range": "bytes=0-1,3-4"})
    assert status == 200 and body == b"hello world\n"
    status, h, body = srv.get("/hello.txt", headers={"Range": "bytes=0-1",
                                                     "If-Range": '"stale"'})
    assert status == 200 and body == b"hello world\n"
    etag = srv.get("/hello.txt")[1]["etag"]
    status, h, body = srv.get("/hello.txt", headers={"Range": "bytes=0-1", "If-Range": etag})
    assert status == 206 and body == b"he"


def test_head(srv):
    status, h, body = srv.request("HEAD", "/big.bin")
    assert status == 200 and body == b"" and h["content-length"] == str(BIG)
    status, h, body = srv.request("HEAD", "/hello.txt")
    assert status == 200 and body == b"" and h["content-length"] == "12"


def test_other_methods_are_405(srv):
    status, h, _ = srv.request("POST", "/hello.txt", body=b"x")
    assert status == 405 and "GET" in h["allow"]


def test_big_file_is_sent_whole_and_keepalive_continues(srv):
    data = (srv.www / "big.bin").read_bytes()
    c = srv.conn()
    try:
        for _ in range(2):
            c.request("GET", "/big.bin")
            r = c.getresponse()
            body = r.read()
            assert r.status == 200 and len(body) == BIG
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        c.request("GET", "/hello.txt")
        assert c.getresponse().read() == b"hello world\n"
    finally:
        c.close()


def test_body_filter_applies_to_static_files(srv):
    assert srv.get("/filtered/a.txt")[2] == b"ABC\n"
    status, h, body = srv.get("/filtered/big.txt")
    assert status == 200 and body == b"Q" * 200_000


def test_client_gone_mid_sendfile_does_not_hurt_the_worker(srv):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1000)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_all(s).endswith(b"hello world\n")
    s.close()


@pytest.mark.parametrize("value,size,expect", [
    ("bytes=0-0", 10, (0, 0)),
    ("bytes=5-", 10, (5, 9)),
    ("bytes=-3", 10, (7, 9)),
    ("bytes=-30", 10, (0, 9)),
    ("bytes=3-100", 10, (3, 9)),
    ("bytes=10-", 10, False),
    ("bytes=-0", 10, False),
    ("bytes=5-2", 10, None),
    ("bytes=a-b", 10, None),
    ("items=0-1", 10, None),
    ("bytes=0-1,2-3", 10, None),
])
def test_parse_range(value, size, expect):
    assert parse_range(value, size) == expect
