"""proxy_pass end to end: a real `edgeworker run` (one worker) in front of real backend
processes (tests/backends/http_backend.py), over loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import time

import pytest

from ..backends import Backend
from ..backends.http_backend import ws_frame
from ..support import Server, free_port, read_all

APP = '''
def expose(req):
    for name in ("upstream_addr", "upstream_status", "upstream_response_time"):
        value = req.var.get(name)
        if value is not None:
            req.resp_headers["X-" + name.replace("_", "-")] = value

def upper(req, chunk, eof):
    return chunk.upper()

def from_access(req):
    req.headers["X-From-Access"] = "yes"

def rewrite_uri(req):
    req.set_uri("/echo/rewritten")

def read_first(req):
    body = req.read_body()
    req.headers["X-Seen-Len"] = str(len(body))
'''

CONFIG = '''
[http]
access_log_format = "json"
header_filter = "app:expose"
client_max_body_size = "1m"

[upstream.ab]
servers = ["{a}", "{b}"]

[upstream.iphash]
servers = ["{a}", "{b}"]
balance = "ip_hash"

[upstream.weighted]
servers = [{{{{ address = "{a}", weight = 2 }}}}, "{b}"]

[upstream.lc]
servers = ["{a}", "{b}"]
balance = "least_conn"

[upstream.keep]
servers = ["{a}"]
keepalive = 8

# proxy_next_upstream: no max_fails, so answers counted as failures mark nothing down
[upstream.nu]
servers = [{{{{ address = "{a}", max_fails = 0 }}}}, {{{{ address = "{b}", max_fails = 0 }}}}]

[upstream.nuoff]
servers = ["{reset}", "{a}"]

[upstream.nuslow]
servers = [{{{{ address = "{never}", max_fails = 0 }}}}, {{{{ address = "{a}", backup = true }}}}]
read_timeout = "300ms"

[upstream.rnd]
servers = ["{a}", "{b}"]
balance = "random"
two = true

[upstream.hashed]
servers = ["{a}", "{b}"]
balance = "hash"
hash = "$request_uri"

[upstream.capped]
servers = [{{{{ address = "{a}", max_conns = 1 }}}}]

[upstream.nufail]
servers = ["{a}", "{b}"]

[upstream.nokeep]
servers = ["{a}"]
keepalive = 0

[upstream.retry_get]
servers = ["{reset}", "{a}"]

[upstream.retry_post]
servers = ["{reset}", "{a}"]

[upstream.refused_post]
servers = ["{dead}", "{a}"]

[upstream.health]
servers = [{{{{ address = "{reset}", max_fails = 1, fail_timeout = "1s" }}}}, "{a}"]

[upstream.alldown]
servers = ["{dead}", "{dead2}"]

[upstream.backup]
servers = ["{dead}", {{{{ address = "{b}", backup = true }}}}]

[upstream.slow]
servers = ["{a}"]
read_timeout = "1s"

[upstream.never]
servers = ["{never}"]
read_timeout = "1s"

[upstream.connto]
servers = ["{blackhole}"]
connect_timeout = "1s"

[upstream.named]
servers = ["localhost:{aport}"]

[[server]]
listen = ["127.0.0.1:{{port}}"]

  [[server.location]]
  match = "/ab/"
  proxy_pass = "http://ab/"

  [[server.location]]
  match = "/rd/"
  proxy_pass = "http://{a}/"

  [[server.location]]
  match = "/rdoff/"
  proxy_pass = "http://{a}/"
  proxy_redirect = "off"

  [[server.location]]
  match = "/rdcustom/"
  proxy_pass = "http://{a}/"
  proxy_redirect = [["http://elsewhere.example/", "https://$host/moved/"], "default"]

  [[server.location]]
  match = "/rnd/"
  proxy_pass = "http://rnd/"

  [[server.location]]
  match = "/hashed/"
  proxy_pass = "http://hashed/"

  [[server.location]]
  match = "/capped/"
  proxy_pass = "http://capped/"

  [[server.location]]
  match = "/nofilter/"
  proxy_pass = "http://keep/"
  header_filter = []

  [[server.location]]
  match = "/next5xx/"
  proxy_pass = "http://nu/"
  proxy_next_upstream = ["error", "timeout", "http_503", "http_404"]

  [[server.location]]
  match = "/nextdefault/"
  proxy_pass = "http://nu/"

  [[server.location]]
  match = "/nextpost/"
  proxy_pass = "http://nu/"
  proxy_next_upstream = ["error", "timeout", "http_503", "non_idempotent"]

  [[server.location]]
  match = "/nextoff/"
  proxy_pass = "http://nuoff/"
  proxy_next_upstream = "off"

  [[server.location]]
  match = "/nexttries/"
  proxy_pass = "http://nu/"
  proxy_next_upstream = ["http_503"]
  proxy_next_upstream_tries = 1

  [[server.location]]
  match = "/nextslow/"
  proxy_pass = "http://nuslow/"

  [[server.location]]
  match = "/nexttimeout/"
  proxy_pass = "http://nuslow/"
  proxy_next_upstream_timeout = "200ms"

  [[server.location]]
  match = "/nextfail/"
  proxy_pass = "http://nufail/"
  proxy_next_upstream = ["error", "timeout", "http_503"]

  [[server.location]]
  match = "/iphash/"
  proxy_pass = "http://iphash/"

  [[server.location]]
  match = "/weighted/"
  proxy_pass = "http://weighted/"

  [[server.location]]
  match = "/lc/"
  proxy_pass = "http://lc/"

  [[server.location]]
  match = "/raw/"
  proxy_pass = "http://keep"

  [[server.location]]
  match = "/direct/"
  proxy_pass = "http://{a}/echo/"

  [[server.location]]
  match = "= /exact"
  proxy_pass = "http://keep/echo/exact-target"

  [[server.location]]
  match = "/keep/"
  proxy_pass = "http://keep/"

  [[server.location]]
  match = "/nokeep/"
  proxy_pass = "http://nokeep/"

  [[server.location]]
  match = "/hdr/"
  proxy_pass = "http://keep/"
  access = "app:from_access"
  proxy_set_header = {{{{ Host = "$host", X-Custom = "v-$remote_addr", X-Drop = "", X-Static = "s" }}}}

  [[server.location]]
  match = "/readfirst/"
  access = "app:read_first"
  proxy_pass = "http://keep/"

  [[server.location]]
  match = "/rw/"
  rewrite = "app:rewrite_uri"
  proxy_pass = "http://keep/zzz/"

  [[server.location]]
  match = "/filters/"
  proxy_pass = "http://keep/"
  body_filter = "app:upper"

  [[server.location]]
  match = "/big/"
  proxy_pass = "http://keep/"
  client_max_body_size = "300m"

  [[server.location]]
  match = "/retryget/"
  proxy_pass = "http://retry_get/"

  [[server.location]]
  match = "/retrypost/"
  proxy_pass = "http://retry_post/"

  [[server.location]]
  match = "/refusedpost/"
  proxy_pass = "http://refused_post/"

  [[server.location]]
  match = "/health/"
  proxy_pass = "http://health/"

  [[server.location]]
  match = "/alldown/"
  proxy_pass = "http://alldown/"

  [[server.location]]
  match = "/backup/"
  proxy_pass = "http://backup/"

  [[server.location]]
  match = "/slow/"
  proxy_pass = "http://slow/"

  [[server.location]]
  match = "/never/"
  proxy_pass = "http://never/"

  [[server.location]]
  match = "/connto/"
  proxy_pass = "http://connto/"

  [[server.location]]
  match = "/named/"
  proxy_pass = "http://named/"

  [[server.location]]
  match = "= /status"
  status = "json"

  [[server.location]]
  match = "/refused/"
  proxy_pass = "http://{dead}/"
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    a, b = Backend("a"), Backend("b")
    reset, never = Backend("resetter"), Backend("never")
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    bh_port = blackhole.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", bh_port))  # fills the backlog
    toml = CONFIG.format(a=a.addr, b=b.addr, reset=reset.addr, never=never.addr,
                         dead=f"127.0.0.1:{free_port()}", dead2=f"127.0.0.1:{free_port()}",
                         blackhole=f"127.0.0.1:{bh_port}", aport=a.port)
    srv = Server(tmp_path_factory.mktemp("proxy"), toml, {"app.py": APP}, workers=1).start()
    yield {"srv": srv, "a": a, "b": b}
    srv.stop()
    for be in (a, b, reset, never):
        be.stop()
    filler.close()
    blackhole.close()


def get(srv, path, method="GET", body=None, headers=None, timeout=10.0):
    return srv.request(method, path, body=body, headers=headers, timeout=timeout)


def echo(srv, path, **kw):
    status, headers, body = get(srv, path, **kw)
    assert status == 200, (status, body)
    doc = json.loads(body)
    doc["hdrs"] = {}
    for k, v in doc["headers"]:
        doc["hdrs"].setdefault(k.lower(), []).append(v)
    return doc, headers


# ------------------------------------------------------------------------ URI rules
def test_without_uri_part_the_request_uri_passes_unchanged(env):
    doc, _ = echo(env["srv"], "/raw/a%2Fb/./c?x=1&y=%20")
    assert doc["target"] == "/raw/a%2Fb/./c?x=1&y=%20"


def test_with_uri_part_the_location_prefix_is_replaced(env):
    doc, _ = echo(env["srv"], "/direct/some/path?q=1")
    assert doc["target"] == "/echo/some/path?q=1"
    doc, _ = echo(env["srv"], "/direct/sp%20ace/x")
    assert doc["target"] == "/echo/sp%20ace/x"  # the normalized URI is escaped again
    doc, _ = echo(env["srv"], "/exact")
    assert doc["target"] == "/echo/exact-target"


def test_changed_uri_is_passed_whole(env):
    doc, _ = echo(env["srv"], "/rw/anything?k=v")
    assert doc["target"] == "/echo/rewritten?k=v"


# ------------------------------------------------------------------------ headers
def test_default_forwarding_headers(env):
    doc, _ = echo(env["srv"], "/keep/h", headers={"X-Forwarded-For": "203.0.113.9",
                                                  "X-Real-IP": "6.6.6.6"})
    h = doc["hdrs"]
    assert h["host"] == ["keep"]  # $proxy_host: the upstream name
    assert h["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert h["x-real-ip"] == ["127.0.0.1"]  # a client-sent value is replaced
    assert h["x-forwarded-proto"] == ["http"]
    doc, _ = echo(env["srv"], "/direct/x")
    assert doc["hdrs"]["host"] == [env["a"].addr]


def test_proxy_set_header_and_access_phase_headers(env):
    doc, _ = echo(env["srv"], "/hdr/x", headers={"Host": "example.test", "X-Drop": "client",
                                                 "X-Custom": "client"})
    h = doc["hdrs"]
    assert h["host"] == ["example.test"]
    assert h["x-custom"] == ["v-127.0.0.1"]
    assert h["x-static"] == ["s"]
    assert "x-drop" not in h  # an empty proxy_set_header value removes the header
    assert h["x-from-access"] == ["yes"]


def test_hop_by_hop_request_headers_are_stripped(env):
    doc, _ = echo(env["srv"], "/keep/hop", headers={
        "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "300",
        "TE": "trailers", "Proxy-Authorization": "Basic eA==", "Proxy-Connection": "x",
        "Trailer": "X-T", "X-Normal": "kept"})
    h = doc["hdrs"]
    for name in ("connection", "x-secret-hop", "keep-alive", "te", "proxy-authorization",
                 "proxy-connection", "trailer", "upgrade", "transfer-encoding"):
        assert name not in h, name
    assert h["x-normal"] == ["kept"]


def test_fields_named_with_underscores_never_reach_the_backend(env):
    """nginx's default: X_User_Id is dropped, so a backend that reads headers CGI-style
    (HTTP_X_USER_ID) cannot take it for the X-User-Id the edge sets."""
    doc, _ = echo(env["srv"], "/keep/u", headers={"X_User_Id": "admin", "X-Normal": "kept"})
    assert "x_user_id" not in doc["hdrs"]
    assert doc["hdrs"]["x-normal"] == ["kept"]


def test_underscores_in_headers_on_forwards_them(env, tmp_path):
    srv = Server(tmp_path, f"""
        [http]
        underscores_in_headers = true

        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          match = "/"
          proxy_pass = "http://{env["a"].addr}"
        """).start()
    try:
        doc, _ = echo(srv, "/u", headers={"X_User_Id": "admin"})
        assert doc["hdrs"]["x_user_id"] == ["admin"]
    finally:
        srv.stop()


def test_hop_by_hop_response_headers_are_stripped(env):
    status, headers, body = get(env["srv"], "/keep/headers")
    assert status == 200 and body == b"h"
    assert headers["x-kept"] == "yes"
    assert "x-hop" not in headers and "keep-alive" not in headers
    assert headers["server"] == "edgeworker"
    assert headers["connection"] == "keep-alive"


def test_untouched_response_fields_go_out_as_prepared(env):
    """No header_filter: the upstream's fields go out as sorted while its head was parsed."""
    raw = env["srv"].raw(b"GET /nofilter/headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    names = [line.split(b":")[0].lower() for line in lines[1:]]
    assert lines[0] == b"HTTP/1.1 200 OK" and body == b"h"
    assert b"x-kept: yes" in [line.lower() for line in lines]
    for hop in (b"x-hop", b"keep-alive"):  # Connection: X-Hop names it hop-by-hop
        assert hop not in names
    for one in (b"content-type", b"content-length", b"date", b"server", b"connection"):
        assert names.count(one) == 1, one  # ours, never the upstream's as well
    assert b"Server: edgeworker" in lines
    status, headers, _ = get(env["srv"], "/nofilter/x")  # and a plain JSON answer
    assert status == 200 and headers["content-type"] == "application/json"


# ------------------------------------------------------------------------ bodies
def test_request_body_with_content_length(env):
    body = os.urandom(300_000)
    doc, _ = echo(env["srv"], "/big/post", method="POST", body=body)
    assert doc["body_len"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert doc["hdrs"]["content-length"] == [str(len(body))]
    assert "transfer-encoding" not in doc["hdrs"]


def _chunked_post(srv, path, pieces):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  "Connection: close\r\n\r\n".encode())
        for p in pieces:
            s.sendall(b"%x\r\n%b\r\n" % (len(p), p))
        s.sendall(b"0\r\n\r\n")
        data = read_all(s, 10)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    if b"chunked" in head.lower():
        out, rest = [], body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line, 16)
            if n == 0:
                break
            out.append(rest[:n])
            rest = rest[n + 2:]
        body = b"".join(out)
    return json.loads(body)


def test_small_chunked_request_body_gets_a_content_length(env):
    doc = _chunked_post(env["srv"], "/big/c", [b"hello ", b"world"])
    assert doc["body"] == "hello world"
    assert doc["hdrs"]["content-length"] == ["11"] if "hdrs" in doc else True
    heads = {k.lower(): v for k, v in doc["headers"]}
    assert heads["content-length"] == "11" and "transfer-encoding" not in heads


def test_large_chunked_request_body_is_streamed_chunked(env):
    pieces = [os.urandom(50_000) for _ in range(8)]
    doc = _chunked_post(env["srv"], "/big/c", pieces)
    whole = b"".join(pieces)
    assert doc["body_len"] == len(whole)
    assert doc["body_sha256"] == hashlib.sha256(whole).hexdigest()
    heads = {k.lower(): v for k, v in doc["headers"]}
    assert heads["transfer-encoding"] == "chunked" and "content-length" not in heads


def test_body_over_client_max_body_size_is_413_and_never_proxied(env):
    resp = env["srv"].raw(b"POST /keep/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
                          + b"x" * 1000)
    assert resp.startswith(b"HTTP/1.1 413 ")
    # a chunked body crossing the limit while streamed is cut with 413 as well
    resp = env["srv"].raw(b"POST /keep/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + b"100000\r\n" + b"x" * 0x100000 + b"\r\n100000\r\n" + b"x" * 0x100000
                          + b"\r\n0\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 413 ")


def test_body_read_by_a_handler_is_forwarded(env):
    doc, _ = echo(env["srv"], "/readfirst/x", method="POST", body=b"abc" * 1000)
    assert doc["body_len"] == 3000
    assert doc["hdrs"]["x-seen-len"] == ["3000"]
    # larger than what goes out with the head in one write: head, then the body
    doc, _ = echo(env["srv"], "/readfirst/x", method="POST", body=b"abcd" * 25000)
    assert doc["body_len"] == 100000
    assert doc["hdrs"]["x-seen-len"] == ["100000"]


def test_expect_100_continue_is_answered_by_the_proxy(env):
    with socket.create_connection(("127.0.0.1", env["srv"].port), timeout=10) as s:
        s.sendall(b"POST /big/e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        first = s.recv(1000)
        assert first.startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"hello")
        data = b""
        while b'"conn"' not in data:
            data += s.recv(65536)
    body = data.partition(b"\r\n\r\n")[2]
    doc = json.loads(body)
    heads = {k.lower() for k, _ in doc["headers"]}
    assert doc["body"] == "hello" and "expect" not in heads


def test_http10_client_gets_a_close_delimited_stream(env):
    n = 3_000_000
    resp = env["srv"].raw(f"GET /keep/big?n={n}&chunked=1 HTTP/1.0\r\n\r\n".encode(),
                          timeout=10)
    head, _, body = resp.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and len(body) == n


def _stream_through(srv, path, expect):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        total = len(rest)
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            total += len(data)
    return head, total


def test_64mb_response_streams_with_flat_worker_memory(env):
    srv = env["srv"]
    get(srv, "/keep/big?n=1000")
    worker = srv.worker_pids()[0]
    before = _rss_kb(worker)
    n = 64 * 1024 * 1024
    head, total = _stream_through(srv, f"/keep/big?n={n}", n)
    assert b"Content-Length: %d" % n in head  # length kept: streamed raw, not re-chunked
    assert total == n
    head, total = _stream_through(srv, f"/keep/big?n={n}&chunked=1", n)
    assert b"Transfer-Encoding: chunked" in head
    assert total > n  # chunk framing around n bytes
    grown = _rss_kb(worker) - before
    assert grown < 20 * 1024, f"worker RSS grew {grown} KiB"


@pytest.mark.slow
def test_1gb_response_streams_with_flat_worker_memory(env):
    srv = env["srv"]
    worker = srv.worker_pids()[0]
    before = _rss_kb(worker)
    n = 1 << 30
    t0 = time.monotonic()
    head, total = _stream_through(srv, f"/keep/big?n={n}", n)
    elapsed = time.monotonic() - t0
    assert total == n
    grown = _rss_kb(worker) - before
    print(f"1 GiB through the proxy in {elapsed:.1f}s ({n / elapsed / 1e6:.0f} MB/s), "
          f"worker RSS +{grown} KiB")
    assert grown < 20 * 1024
    assert elapsed < 120


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_head_keeps_the_upstream_content_length(env):
    status, headers, body = get(env["srv"], "/keep/big?n=123456", method="HEAD")
    assert status == 200 and body == b""
    assert headers["content-length"] == "123456"


def test_filters_apply_to_proxied_responses(env):
    status, headers, body = get(env["srv"], "/filters/name")
    assert status == 200
    assert body == b"A"  # body_filter upper-cased the backend name
    assert headers["x-upstream-status"] == "200"
    n = 300_000
    status, headers, body = get(env["srv"], f"/filters/big?n={n}")
    assert body == b"X" * n


# ------------------------------------------------------------------------ keep-alive
def test_upstream_connections_are_reused(env):
    ports = {echo(env["srv"], "/keep/k")[0]["conn"] for _ in range(10)}
    assert len(ports) == 1
    ports = {echo(env["srv"], "/nokeep/k")[0]["conn"] for _ in range(4)}
    assert len(ports) == 4


def test_upstream_closing_its_connection_is_handled(env):
    srv = env["srv"]
    for _ in range(3):
        status, _, body = get(srv, "/keep/close")
        assert status == 200 and body == b"bye"
        echo(srv, "/keep/after-close")


# ------------------------------------------------------------------------ balancing
def test_round_robin_alternates(env):
    names = [get(env["srv"], "/ab/name")[2] for _ in range(6)]
    assert set(names) == {b"a", b"b"}
    assert all(names[i] != names[i + 1] for i in range(5))


def test_proxy_next_upstream_http_status_tries_the_next_server(env):
    # a answers 503, b answers 200: every request ends with b, whichever server came first
    seen = set()
    for _ in range(4):
        status, headers, body = get(env["srv"], "/next5xx/status/503?on=a")
        assert (status, body) == (200, b"b")
        seen.add(headers["x-upstream-status"])
    assert seen == {"503, 200", "200"}  # round robin started on a at least once
    # the default (error, timeout) passes a 503 on as it is
    answers = {get(env["srv"], "/nextdefault/status/503?on=a")[0] for _ in range(4)}
    assert answers == {200, 503}


def test_a_status_proxy_next_upstream_names_counts_against_max_fails(env):
    # nufail = [a, b] with max_fails 1: a's 503 marks it down for fail_timeout (nginx counts
    # http_500/502/503/504/429 when listed), so the next requests go to b alone
    got = [get(env["srv"], "/nextfail/status/503?on=a")[1]["x-upstream-status"]
           for _ in range(4)]
    assert got.count("503, 200") == 1 and got.count("200") == 3


def test_proxy_next_upstream_when_every_server_fails_passes_the_last_answer(env):
    status, headers, body = get(env["srv"], "/next5xx/status/404")
    assert (status, body) == (404, b"status 404")
    assert headers["x-upstream-status"] == "404, 404"
    assert len(headers["x-upstream-addr"].split(", ")) == 2


def test_proxy_next_upstream_keeps_non_idempotent_requests_unless_told(env):
    answers = [get(env["srv"], "/next5xx/status/503?on=a", method="POST", body=b"x")[0]
               for _ in range(4)]
    assert sorted(set(answers)) == [200, 503]  # a POST already sent is never sent again
    for _ in range(4):
        status, _, body = get(env["srv"], "/nextpost/status/503?on=a", method="POST", body=b"x")
        assert (status, body) == (200, b"b")


def test_proxy_next_upstream_off_and_tries(env):
    # nuoff = [resetter, a]: with "off" the reset is the answer (502), no second try
    statuses = {get(env["srv"], "/nextoff/x")[0] for _ in range(4)}
    assert 502 in statuses
    for _ in range(4):
        status, headers, _ = get(env["srv"], "/nexttries/status/503?on=a")
        assert "," not in headers["x-upstream-status"]  # one attempt only
        assert status in (200, 503)


def test_proxy_redirect_default_rewrites_the_upstream_s_own_urls(env):
    a = env["a"].addr
    # proxy_pass with a URI part: its URL becomes the location's prefix
    status, headers, _ = get(env["srv"], "/rd/redirect?to=http://HOST/landing?x=1")
    assert status == 302 and headers["location"] == "/rd/landing?x=1"
    # without a URI part: proxy_pass + "/" becomes "/" (Host sent upstream: the group name);
    # /raw/ passes the request URI unchanged, so the backend sees /raw/redirect
    status, headers, _ = get(env["srv"], "/raw/redirect?to=http://HOST/raw/landing")
    assert headers["location"] == "/raw/landing"
    # "http://keep/" with a URI part ("/") in location /keep/: the prefix comes back
    status, headers, _ = get(env["srv"], "/keep/redirect?to=http://HOST/landing")
    assert headers["location"] == "/keep/landing"
    # other URLs and relative ones pass as they are
    for to in ("http://example.com/x", "/already/relative", f"http://{a}.evil/x"):
        assert get(env["srv"], f"/rd/redirect?to={to}")[1]["location"] == to
    # Refresh: the URL after url=
    status, headers, body = get(env["srv"], "/rd/redirect?to=http://HOST/next&refresh=1")
    assert (status, body) == (200, b"soon") and headers["refresh"] == "3; url=/rd/next"


def test_proxy_redirect_off_and_own_rules(env):
    a = env["a"].addr
    _, headers, _ = get(env["srv"], "/rdoff/redirect?to=http://HOST/landing")
    assert headers["location"] == f"http://{a}/landing"
    _, headers, _ = get(env["srv"], "/rdcustom/redirect?to=http://elsewhere.example/p",
                        headers={"Host": "edge.example"})
    assert headers["location"] == "https://edge.example/moved/p"  # $host expanded
    _, headers, _ = get(env["srv"], "/rdcustom/redirect?to=http://HOST/q")
    assert headers["location"] == "/rdcustom/q"  # then "default"


def test_hash_balance_keeps_a_uri_on_one_server(env):
    for n in range(6):
        names = {get(env["srv"], f"/hashed/name?k={n}")[2] for _ in range(3)}
        assert len(names) == 1  # the same $request_uri, the same server
    spread = {get(env["srv"], f"/hashed/name?k={n}")[2] for n in range(24)}
    assert spread == {b"a", b"b"}


def test_random_balance_reaches_both_servers(env):
    names = {get(env["srv"], "/rnd/name")[2] for _ in range(30)}
    assert names == {b"a", b"b"}  # (a miss has probability 2 * 2**-30)


def test_max_conns_full_server_answers_502_at_once(env):
    import threading

    slow = []
    t = threading.Thread(target=lambda: slow.append(get(env["srv"], "/capped/slow?delay=1.5")))
    t.start()
    time.sleep(0.4)  # the slow request holds the server's one connection
    t0 = time.monotonic()
    status, _, _ = get(env["srv"], "/capped/name")
    assert status == 502 and time.monotonic() - t0 < 1.0
    t.join(10)
    assert slow[0][0] == 200
    assert get(env["srv"], "/capped/name")[0] == 200  # free again
    assert "no live upstreams" in env["srv"].errors()


def test_proxy_next_upstream_timeout_stops_retrying(env):
    # the primary never answers (read_timeout 300 ms); the backup answers
    status, headers, body = get(env["srv"], "/nextslow/name")
    assert (status, body) == (200, b"a") and headers["x-upstream-status"] == "504, 200"
    # past proxy_next_upstream_timeout (200 ms) no new attempt: the timeout is the answer
    status, headers, _ = get(env["srv"], "/nexttimeout/name")
    assert status == 504 and headers["x-upstream-status"] == "504"


def test_weights_ip_hash_and_least_conn(env):
    srv = env["srv"]
    names = [get(srv, "/weighted/name")[2] for _ in range(9)]
    assert names.count(b"a") == 6 and names.count(b"b") == 3
    names = {get(srv, "/iphash/name")[2] for _ in range(6)}
    assert len(names) == 1  # one client address: one backend
    # least_conn: while a slow request holds one backend, the others go to the other one
    import threading

    slow = threading.Thread(target=get, args=(srv, "/lc/slow?delay=1.5"))
    slow.start()
    time.sleep(0.3)
    names = [get(srv, "/lc/name")[2] for _ in range(4)]
    slow.join(5)
    assert len(set(names)) == 1, names


def test_host_name_server(env):
    status, headers, body = get(env["srv"], "/named/name")
    assert status == 200 and body == b"a"


# ------------------------------------------------------------------------ failures
def test_refused_is_502_quickly(env):
    t0 = time.monotonic()
    status, headers, _ = get(env["srv"], "/refused/x")
    assert status == 502
    assert time.monotonic() - t0 < 2
    assert "connect() failed" in env["srv"].errors()


def test_reset_and_garbage_are_502(env):
    assert get(env["srv"], "/keep/reset")[0] == 502
    assert get(env["srv"], "/keep/garbage")[0] == 502
    assert get(env["srv"], "/keep/name")[0] == 200  # the worker is fine


def test_read_timeout_is_504(env):
    t0 = time.monotonic()
    status, headers, _ = get(env["srv"], "/never/x")
    assert status == 504
    assert 0.9 < time.monotonic() - t0 < 5
    assert get(env["srv"], "/slow/slow?delay=0.2")[0] == 200
    assert get(env["srv"], "/slow/slow?delay=2")[0] == 504


def test_read_timeout_is_between_reads_not_whole_response(env):
    # /big streams ~200 MB: far longer than read_timeout (1 s) in total would be on a slow
    # client, but every read is quick, so it completes
    head, total = _stream_through(env["srv"], "/slow/big?n=50000000", 50_000_000)
    assert total == 50_000_000


def test_connect_timeout_is_504(env):
    t0 = time.monotonic()
    status, headers, _ = get(env["srv"], "/connto/x")
    assert status == 504
    assert 0.9 < time.monotonic() - t0 < 5
    assert "timed out while connecting" in env["srv"].errors()


def test_backend_cut_mid_response_truncates_and_closes(env):
    with socket.create_connection(("127.0.0.1", env["srv"].port), timeout=10) as s:
        s.sendall(b"GET /keep/cut?after=300000 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_all(s, 10)  # the server closes: read_all returns
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"Content-Length: 1000000" in head
    assert len(body) < 1_000_000
    assert "prematurely closed" in env["srv"].errors()


def test_backend_killed_mid_response(env, tmp_path):
    victim = Backend("victim")
    srv = Server(tmp_path / "k", CONFIG_ONE.format(addr=victim.addr), workers=1).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /die?after=200000 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_all(s, 10)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Content-Length: 1000000" in head and len(body) < 1_000_000
        victim.proc.wait(5)
        assert not victim.alive()
        status, _, _ = get(srv, "/x")  # the backend is gone: refused
        assert status == 502
    finally:
        srv.stop()
        victim.stop()


CONFIG_ONE = '''
[upstream.one]
servers = ["{addr}"]
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/"
  proxy_pass = "http://one"
'''


def test_get_is_retried_on_the_next_peer(env):
    status, headers, body = get(env["srv"], "/retryget/name")
    assert status == 200 and body == b"a"
    assert headers["x-upstream-status"] == "502, 200"
    addrs = headers["x-upstream-addr"].split(", ")
    assert len(addrs) == 2 and addrs[1] == env["a"].addr
    assert len(headers["x-upstream-response-time"].split(", ")) == 2


def test_post_is_not_retried_once_sent(env):
    status, headers, _ = get(env["srv"], "/retrypost/name", method="POST", body=b"x")
    assert status == 502
    assert headers.get("x-upstream-status") == "502"


def test_post_is_retried_when_connect_failed(env):
    status, headers, body = get(env["srv"], "/refusedpost/name", method="POST", body=b"x")
    assert status == 200 and body == b"a"
    assert headers["x-upstream-status"] == "502, 200"


def test_max_fails_marks_peer_down_for_fail_timeout(env):
    srv = env["srv"]
    first = get(srv, "/health/name")[1]
    assert first["x-upstream-status"] == "502, 200"
    for _ in range(4):  # the resetter is down: only the good peer is asked
        h = get(srv, "/health/name")[1]
        assert h["x-upstream-status"] == "200"
    time.sleep(1.1)  # fail_timeout passed: the resetter gets probed again
    # (its effective weight recovers first, as in nginx: within a few requests)
    probed = [get(srv, "/health/name")[1]["x-upstream-status"] for _ in range(6)]
    assert "502, 200" in probed


def test_all_peers_down_is_502_quickly(env):
    srv = env["srv"]
    assert get(srv, "/alldown/x")[0] == 502  # both refused, both marked down
    t0 = time.monotonic()
    status, _, _ = get(srv, "/alldown/x")
    assert status == 502
    assert time.monotonic() - t0 < 1
    assert "no live upstreams" in srv.errors()


def test_backup_serves_when_primary_is_down(env):
    for _ in range(3):
        status, _, body = get(env["srv"], "/backup/name")
        assert status == 200 and body == b"b"


def test_upstream_variables_in_access_log(env):
    srv = env["srv"]
    _, headers, _ = get(srv, "/retryget/name?marker=alog")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in srv.access_log.read_text().splitlines() if x]
        mine = [x for x in lines if "marker=alog" in x["uri"]]
        if mine:
            break
        time.sleep(0.05)
    assert mine[0]["upstream_status"] == headers["x-upstream-status"]
    assert mine[0]["upstream_status"].endswith("200")
    assert mine[0]["upstream_addr"] == headers["x-upstream-addr"]
    assert mine[0]["upstream_addr"].endswith(env["a"].addr)
    assert float(mine[0]["upstream_response_time"].split(", ")[-1]) >= 0


def test_status_page_counts_upstream_requests_and_fails(env):
    srv = env["srv"]
    for _ in range(3):
        get(srv, "/keep/name")
    get(srv, "/health/name")
    deadline = time.monotonic() + 5
    while True:
        doc = json.loads(get(srv, "/status")[2])
        ups = doc["upstreams"]
        keep = ups["keep"]["peers"][env["a"].addr]
        health = ups["health"]["peers"]
        resetter = next(p for addr, p in health.items() if addr != env["a"].addr)
        if keep["requests"] >= 3 and resetter["fails"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert keep["requests"] >= 3
    assert resetter["fails"] >= 1
    assert resetter["state"] in ("down", "up")


# ------------------------------------------------------------------------ websocket
def test_websocket_echo_through_the_proxy(env):
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", env["srv"].port), timeout=10) as s:
        s.sendall(f"GET /keep/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        expect = base64.b64encode(hashlib.sha1(
            key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert b"Sec-WebSocket-Accept: " + expect in head
        for msg in (b"hello", b"x" * 70000, "żółw".encode()):
            s.sendall(ws_frame(1, msg, mask=os.urandom(4)))
            want = ws_frame(1, msg)
            while len(rest) < len(want):
                rest += s.recv(65536)
            assert rest[:len(want)] == want
            rest = rest[len(want):]
        s.sendall(ws_frame(8, b"", mask=b"abcd"))
        tail = rest + read_all(s, 5)
        assert tail.startswith(ws_frame(8, b""))


def test_upstream_variables_in_the_json_log_without_any_handler(env):
    # no handler reads req.var on /nofilter/: the variables come from what the proxy tried
    srv = env["srv"]
    status, _, _ = get(srv, "/nofilter/name?marker=plainlog")
    assert status == 200
    deadline = time.monotonic() + 5
    mine: list = []
    while time.monotonic() < deadline and not mine:
        lines = [json.loads(x) for x in srv.access_log.read_text().splitlines() if x]
        mine = [x for x in lines if "marker=plainlog" in x["uri"]]
        time.sleep(0.05)
    assert mine[0]["upstream_status"] == "200"
    assert mine[0]["upstream_addr"] == env["a"].addr
    assert re.fullmatch(r"\d+\.\d{3}", mine[0]["upstream_response_time"])
