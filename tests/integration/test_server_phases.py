"""End-to-end: real `edgeworker run` processes, real HTTP over loopback.

One server (two workers) with a rich config serves most tests of this module.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from ..support import Server, read_all, split_responses, status_of, wait_until

APP = '''
import time
import edgeworker

def rw(req):
    req.ctx["trail"] = ["rewrite"]
    if req.uri == "/old":
        req.set_uri("/phases", jump=True)

def acc(req):
    req.ctx.setdefault("trail", []).append("access")
    req.var["who"] = req.headers.get("x-user", "anon")
    if req.headers.get("x-deny"):
        req.exit(403, "denied\\n", headers={"X-Why": "deny"})

def content(req):
    req.ctx["trail"].append("content")
    return {"trail": req.ctx["trail"], "who": req.var["who"], "uri": req.uri,
            "args": req.args.getall("a"), "worker": edgeworker.worker.id}

def hf(req):
    req.resp_headers["X-Trail"] = ",".join(req.ctx.get("trail", []) + ["header_filter"])

def bf(req, chunk, eof):
    return chunk.replace(b"content", b"CONTENT")

def log(req):
    edgeworker.shared["counters"].incr("logged:" + req.uri, 1, init=0)

def say(req):
    req.say("line", 1, None, True)
    req.print("a", "b")
    req.say()

def stream(req):
    req.say("first")
    req.flush()
    time.sleep(0.05)
    req.say("second")
    req.eof()

def gen(req):
    def body():
        yield b"one,"
        yield "two,"
        yield b"three"
    return body()

def returns_list(req):
    return [1, "two", None]

def returns_bytes(req):
    req.content_type = "application/octet-stream"
    return b"\\x00\\x01"

def echo(req):
    body = req.read_body()
    return {"len": len(body), "body": body.decode("latin-1")[:64]}

def boom(req):
    raise RuntimeError("kaboom in content")

def say_in_access(req):
    req.say("not here")

def redirect(req):
    req.redirect("/target?x=1", 301)

def vars_(req):
    v = req.var
    return {k: v.get(k) for k in ("request_method", "uri", "args", "arg_a", "http_x_thing",
                                  "cookie_sid", "remote_addr", "host", "request_uri", "scheme",
                                  "server_port", "1")}

def shared_incr(req):
    n = edgeworker.shared.counters.incr("hits", 1, init=0)
    return {"n": n, "worker": edgeworker.worker.id, "pid": edgeworker.worker.pid}

def get_counter(req):
    return {"value": edgeworker.shared["counters"].get(req.args.get("k"))}

def slow(req):
    edgeworker.sleep(float(req.args.get("t", "0.5")))
    return "slow done\\n"

def req_id(req):
    return req.id

def exit_in_log(req):
    req.exit(500)

def fetch(req):
    r = edgeworker.http.request("GET", "http://127.0.0.1:%d/ok" % req.server_port, timeout=5)
    return {"status": r.status, "body": r.body.decode()}

def hf_deny(req):
    if req.args.get("deny"):
        req.exit(451, "unavailable for legal reasons\\n")

def hdrs(req):
    req.headers["X-Added"] = "yes"
    del req.headers["x-remove"]
    return {"added": req.headers.get("x-added"), "removed": req.headers.get("x-remove"),
            "multi": req.headers.getall("x-multi")}
'''

CONF = '''
[main]

[http]
access_log_format = "json"
keepalive_requests = 5
client_header_timeout = "1s"
client_body_timeout = "1s"
keepalive_timeout = "2s"
max_request_line = "1k"
max_header_size = "2k"
max_headers = 20
client_max_body_size = "1k"
log = "app:log"

[shared_dict]
counters = "1m"

[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  match = "= /phases"
  rewrite = "app:rw"
  access = ["app:acc"]
  content = "app:content"
  header_filter = "app:hf"
  body_filter = "app:bf"

  [[server.location]]
  match = "= /old"
  rewrite = "app:rw"
  content = "app:boom"

  [[server.location]]
  match = "= /say"
  content = "app:say"
  add_header = {{ X-Frame-Options = "DENY", X-Uri = "$uri" }}

  [[server.location]]
  match = "= /stream"
  content = "app:stream"
  header_filter = "app:hf_deny"

  [[server.location]]
  match = "= /fetch"
  content = "app:fetch"

  [[server.location]]
  match = "= /gen"
  content = "app:gen"

  [[server.location]]
  match = "= /list"
  content = "app:returns_list"

  [[server.location]]
  match = "= /bytes"
  content = "app:returns_bytes"

  [[server.location]]
  match = "= /echo"
  content = "app:echo"

  [[server.location]]
  match = "= /echo-big"
  content = "app:echo"
  client_max_body_size = "64k"

  [[server.location]]
  match = "= /boom"
  content = "app:boom"

  [[server.location]]
  match = "= /say-in-access"
  access = "app:say_in_access"
  content = "app:content"

  [[server.location]]
  match = "= /redirect"
  content = "app:redirect"

  [[server.location]]
  match = "~ ^/vars/(\\\\w+)$"
  content = "app:vars_"

  [[server.location]]
  match = "= /incr"
  content = "app:shared_incr"

  [[server.location]]
  match = "= /counter"
  content = "app:get_counter"

  [[server.location]]
  match = "= /slow"
  content = "app:slow"

  [[server.location]]
  match = "= /id"
  content = "app:req_id"

  [[server.location]]
  match = "= /hdrs"
  content = "app:hdrs"

  [[server.location]]
  match = "= /exit-in-log"
  content = "app:req_id"
  log = "app:exit_in_log"

  [[server.location]]
  match = "= /moved"
  return = {{ status = 301, location = "https://example.com$uri" }}

  [[server.location]]
  match = "= /ok"
  return = {{ status = 200, body = "ok $request_method\\n" }}
  default_type = "text/x-ok"
'''


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("phases"), CONF, {"app.py": APP}, workers=2).start()
    yield s
    s.stop()


def test_phases_run_in_order_with_shared_ctx(srv):
    status, headers, body = srv.get("/phases?a=1&a=2", headers={"X-User": "ann"})
    assert status == 200
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    # body_filter rewrote "content" to "CONTENT" in the JSON text
    assert doc["trail"] == ["rewrite", "access", "CONTENT"]
    assert doc["who"] == "ann" and doc["args"] == ["1", "2"]
    assert headers["x-trail"] == "rewrite,access,content,header_filter"
    assert int(headers["content-length"]) == len(body)


def test_exit_in_access_skips_content_but_runs_filters_and_log(srv):
    status, headers, body = srv.get("/phases", headers={"X-Deny": "1"})
    assert status == 403
    assert body == b"denied\n"
    assert headers["x-why"] == "deny"
    assert headers["x-trail"] == "rewrite,access,header_filter"
    # the http-level log handler ran for it
    _, _, counter = srv.get("/counter?k=logged:/phases")
    assert json.loads(counter)["value"] >= 1


def test_set_uri_jump_rematches_location(srv):
    status, _, body = srv.get("/old")
    assert status == 200
    assert json.loads(body)["uri"] == "/phases"


def test_say_print_and_add_header(srv):
    status, headers, body = srv.get("/say")
    assert status == 200
    assert body == b"line1niltrue\nab\n"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-uri"] == "/say"
    assert headers["content-type"] == "text/plain"


def test_flush_streams_chunked(srv):
    raw = srv.raw(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"6\r\nfirst\n\r\n7\r\nsecond\n\r\n0\r\n\r\n"


def test_exit_in_header_filter_replaces_response(srv):
    status, headers, body = srv.get("/stream?deny=1")
    assert status == 451
    assert body == b"unavailable for legal reasons\n"
    assert headers["content-length"] == str(len(body))


def test_iterable_return_is_streamed(srv):
    status, headers, body = srv.get("/gen")
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert body == b"one,two,three"


def test_module_http_client_from_a_handler(srv):
    status, _, body = srv.get("/fetch")
    assert status == 200
    assert json.loads(body) == {"status": 200, "body": "ok GET\n"}


def test_list_and_bytes_returns(srv):
    status, headers, body = srv.get("/list")
    assert json.loads(body) == [1, "two", None]
    assert headers["content-type"] == "application/json"
    status, headers, body = srv.get("/bytes")
    assert body == b"\x00\x01"
    assert headers["content-type"] == "application/octet-stream"


def test_read_body_content_length_and_chunked(srv):
    status, _, body = srv.request("POST", "/echo", body=b"hello body")
    assert status == 200 and json.loads(body) == {"len": 10, "body": "hello body"}
    raw = srv.raw(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert status_of(raw) == 200
    assert b'{"len":11,"body":"hello world"}' in raw


def test_body_over_client_max_body_size_is_413(srv):
    status, headers, _ = srv.request("POST", "/echo", body=b"x" * 2000)
    assert status == 413
    status, _, body = srv.request("POST", "/echo-big", body=b"x" * 2000)
    assert status == 200 and json.loads(body)["len"] == 2000


def test_chunked_body_over_limit_is_413(srv):
    payload = b"".join(b"100\r\n" + b"y" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    raw = srv.raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + payload)
    assert status_of(raw) == 413
    assert b"Connection: close" in raw


def test_expect_100_continue(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        first = s.recv(100)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"abcd")
        s.settimeout(5)
        data = s.recv(65536)
        assert status_of(data) == 200 and b'"len":4' in data


def test_expect_100_continue_rejected_early_when_too_big(srv):
    raw = srv.raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    assert status_of(raw) == 413
    assert b"100 Continue" not in raw


def test_handler_exception_is_500_logged_and_worker_survives(srv):
    _, _, before = srv.get("/incr")
    logged = srv.errors().count("RuntimeError: kaboom in content")
    status, headers, body = srv.get("/boom")
    assert status == 500
    assert b"500 Internal Server Error" in body
    assert headers["content-type"].startswith("text/html")
    srv.wait_log("RuntimeError: kaboom in content", timeout=5, count=logged + 1)
    log = srv.errors()
    assert "RuntimeError: kaboom in content" in log
    assert "Traceback" in log
    # the workers are the same processes: nothing crashed
    pids = set(srv.worker_pids())
    for _ in range(6):
        assert srv.get("/incr")[0] == 200
    assert set(srv.worker_pids()) == pids


def test_output_in_access_phase_is_phase_error(srv):
    message = "PhaseError: req.say() is not allowed in the access phase"
    logged = srv.errors().count(message)
    status, _, _ = srv.get("/say-in-access")
    assert status == 500
    srv.wait_log(message, timeout=5, count=logged + 1)
    assert message in srv.errors()


def test_exit_in_log_phase_is_logged_not_sent(srv):
    message = "req.exit() is not allowed in the log phase"
    logged = srv.errors().count(message)
    status, _, body = srv.get("/exit-in-log")
    assert status == 200 and len(body) == 32
    srv.wait_log(message, timeout=5, count=logged + 1)
    assert message in srv.errors()


def test_redirect(srv):
    status, headers, body = srv.get("/redirect")
    assert status == 301
    assert headers["location"] == "/target?x=1"
    assert b"301 Moved Permanently" in body


def test_return_directive(srv):
    status, headers, _ = srv.get("/moved")
    assert status == 301 and headers["location"] == "https://example.com/moved"
    status, headers, body = srv.get("/ok")
    assert status == 200 and body == b"ok GET\n"
    assert headers["content-type"] == "text/x-ok"


def test_variables(srv):
    status, _, body = srv.get(
        "/vars/abc?a=1%202", headers={"X-Thing": "t", "Cookie": "sid=s1; other=2", "Host": "Example.COM:99"}
    )
    doc = json.loads(body)
    assert doc == {
        "request_method": "GET",
        "uri": "/vars/abc",
        "args": "a=1%202",
        "arg_a": "1 2",
        "http_x_thing": "t",
        "cookie_sid": "s1",
        "remote_addr": "127.0.0.1",
        "host": "example.com",
        "request_uri": "/vars/abc?a=1%202",
        "scheme": "http",
        "server_port": str(srv.port),
        "1": "abc",
    }


def test_request_headers_are_writable(srv):
    status, _, body = srv.get("/hdrs", headers={"X-Remove": "1", "X-Multi": "a"})
    assert json.loads(body) == {"added": "yes", "removed": None, "multi": ["a"]}


def test_request_id_is_32_hex_and_unique(srv):
    ids = {srv.get("/id")[2] for _ in range(5)}
    assert len(ids) == 5
    for i in ids:
        assert len(i) == 32 and int(i, 16) >= 0


def test_shared_dict_is_shared_by_all_workers(srv):
    seen_workers = set()
    values = []
    for _ in range(40):
        c = srv.conn()
        c.request("GET", "/incr")
        doc = json.loads(c.getresponse().read())
        c.close()
        seen_workers.add(doc["worker"])
        values.append(doc["n"])
    assert values == sorted(values) and len(set(values)) == 40  # one counter, strictly increasing
    assert seen_workers <= {0, 1}


def test_not_found(srv):
    status, headers, body = srv.get("/nothing/here")
    assert status == 404
    assert b"<center><h1>404 Not Found</h1></center>" in body
    assert headers["server"] == "edgeworker"


def test_keepalive_requests_limit_closes_connection(srv):
    c = srv.conn()
    for i in range(5):
        c.request("GET", "/ok")
        r = c.getresponse()
        r.read()
        expected = "close" if i == 4 else "keep-alive"
        assert r.getheader("connection") == expected
    c.close()


def test_pipelined_requests_answered_in_order(srv):
    reqs = b"".join(
        b"GET /vars/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)
    ) + b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = srv.raw(reqs)
    responses = split_responses(raw)
    assert [r[0] for r in responses] == [200, 200, 200, 200]
    assert [json.loads(r[2])["1"] for r in responses[:3]] == ["p0", "p1", "p2"]
    assert responses[3][2] == b"ok GET\n"


def test_head_has_no_body(srv):
    raw = srv.raw(b"HEAD /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 8" in head  # "ok HEAD\n"
    assert body == b""


def test_http10_closes_unless_keepalive(srv):
    raw = srv.raw(b"GET /ok HTTP/1.0\r\n\r\n")
    assert status_of(raw) == 200 and b"Connection: close" in raw and raw.endswith(b"ok GET\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = s.recv(65536)
        assert b"Connection: keep-alive" in first
        s.sendall(b"GET /ok HTTP/1.0\r\n\r\n")
        assert status_of(read_all(s)) == 200


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
    ids=["414-line", "431-size", "431-count", "400-garbage", "400-cl-te", "400-dup-cl",
         "400-space-colon", "400-obs-fold", "400-no-host", "400-dotdot"],
)
def test_bad_requests_get_status_and_close(srv, raw, status):
    resp = srv.raw(raw)
    assert status_of(resp) == status
    assert b"Connection: close" in resp.split(b"\r\n\r\n")[0]


def test_slow_header_gets_408(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        data = read_all(s, timeout=5)
        assert status_of(data) == 408
        assert time.monotonic() - t0 < 4


def test_slow_body_gets_408(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        data = read_all(s, timeout=5)
        assert status_of(data) == 408


def test_idle_keepalive_connection_closed_after_timeout(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=6) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(s.recv(65536)) == 200
        t0 = time.monotonic()
        assert read_all(s, timeout=6) == b""  # closed silently
        assert 1.5 < time.monotonic() - t0 < 5


def test_access_log_json_has_handler_variables(srv):
    srv.get("/phases", headers={"X-User": "logme", "User-Agent": "ua/1"})
    wait_until(lambda: srv.access_log.read_text() if srv.access_log.exists() else "",
               lambda text: '"logme"' in text, what="the request in the access log")
    lines = [json.loads(x) for x in srv.access_log.read_text().splitlines() if x.strip()]
    mine = [x for x in lines if x.get("who") == "logme"]
    assert mine, lines[-3:]
    rec = mine[-1]
    assert rec["status"] == 200 and rec["method"] == "GET" and rec["uri"] == "/phases"
    assert rec["user_agent"] == "ua/1" and len(rec["request_id"]) == 32
