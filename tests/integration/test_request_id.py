"""``$request_id``: honoured from ``X-Request-Id`` (configurable), sent back, seen by handlers and
the upstream, and written on request-scoped error-log lines."""

from __future__ import annotations

import re

HEX32 = re.compile(r"^[0-9a-f]{32}$")

HANDLERS = {
    "app.py": """
        import edgeworker

        def show(req):
            # what the handler (and a proxied upstream) sees
            return "%s|%s|%s" % (req.id, req.var["request_id"],
                                 req.headers.get("x-request-id") or "")

        def trace(req):
            return "%s|%s" % (req.id, req.headers.get("x-trace") or "")

        def noisy(req):
            edgeworker.log.warning("noisy handler says hi")
            return "ok"

        def boom(req):
            raise RuntimeError("kaboom")

        def tagged(req):
            req.resp_headers["X-A"] = "1"
            return "tagged"

        def untagged(req):
            del req.resp_headers["X-Request-Id"]
            return "untagged"

        def peek(req):  # header_filter: reads the headers on their way out
            req.resp_headers["X-Seen"] = req.resp_headers.get("x-request-id") or "none"

        def init_worker():
            edgeworker.timer.at(0, lambda premature: edgeworker.log.warning("timer says hi"))
    """,
}

CONFIG = """
[main]
init_worker = "app:init_worker"
[http]
access_log_format = '$request_id $status'
{extra}
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "= /show"
  content = "app:show"
  [[server.location]]
  match = "= /trace"
  content = "app:trace"
  [[server.location]]
  match = "= /noisy"
  content = "app:noisy"
  [[server.location]]
  match = "= /boom"
  content = "app:boom"
  [[server.location]]
  match = "= /tagged"
  content = "app:tagged"
  header_filter = "app:peek"
  [[server.location]]
  match = "= /untagged"
  content = "app:untagged"
  [[server.location]]
  match = "= /proxied"
  proxy_pass = "http://127.0.0.1:{{port}}/untagged"
  header_filter = "app:peek"
"""


def start(server, extra: str = ""):
    return server(CONFIG.format(extra=extra), files=HANDLERS, workers=1)


def test_fresh_id_is_32_hex_sent_back_and_seen_by_handlers(server):
    srv = start(server)
    ids = set()
    for _ in range(5):
        status, headers, body = srv.get("/show")
        assert status == 200
        rid = headers["x-request-id"]
        assert HEX32.match(rid)
        own, var, forwarded = body.decode().split("|")
        assert own == var == forwarded == rid  # req.headers carries it: forwarded upstream
        ids.add(rid)
    assert len(ids) == 5
    lines = srv.access_lines(5)
    assert {line.split()[0] for line in lines} == ids  # $request_id in the access log


def test_incoming_id_is_honoured(server):
    srv = start(server)
    incoming = "client-id_42.abc~XYZ:1/2"
    status, headers, body = srv.get("/show", headers={"X-Request-Id": incoming})
    assert headers["x-request-id"] == incoming
    assert body.decode() == f"{incoming}|{incoming}|{incoming}"
    assert srv.access_lines(1)[-1] == f"{incoming} 200"
    longest = "a" * 128
    assert srv.get("/show", headers={"X-Request-Id": longest})[1]["x-request-id"] == longest


def test_handlers_see_change_and_delete_the_response_id(server):
    srv = start(server)
    resp = srv.raw(b"GET /tagged HTTP/1.1\r\nHost: x\r\nX-Request-Id: t-1\r\n"
                   b"Connection: close\r\n\r\n")
    head = resp.partition(b"\r\n\r\n")[0].decode().lower()
    assert head.count("x-request-id: t-1") == 1, head  # once, though handlers took the headers
    assert "x-a: 1" in head and "x-seen: t-1" in head
    status, headers, body = srv.get("/untagged")
    assert status == 200 and body == b"untagged"
    assert "x-request-id" not in headers  # deleted by the handler: not sent
    # a proxied response (its headers come from the upstream, which sent no id): ours goes
    # out once, and a header_filter sees it
    resp = srv.raw(b"GET /proxied HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-1\r\n"
                   b"Connection: close\r\n\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    text = head.decode().lower()
    assert text.startswith("http/1.1 200") and body == b"untagged", resp
    assert text.count("x-request-id: p-1") == 1 and "x-seen: p-1" in text, text


def test_invalid_incoming_id_is_replaced(server):
    srv = start(server)
    for bad in ("a" * 129, "has space", "tab\there", "caf\u00e9"):
        raw_bad = bad.encode("utf-8")
        resp = srv.raw(b"GET /show HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + raw_bad
                       + b"\r\nConnection: close\r\n\r\n")
        head, _, body = resp.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), resp
        rid = [line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n")
               if line.lower().startswith(b"x-request-id:")]
        assert len(rid) == 1 and HEX32.match(rid[0]), (bad, rid)
        own, var, forwarded = body.decode().split("|")
        assert own == var == forwarded == rid[0]  # the bad value never reaches the upstream


def test_header_name_is_configurable(server):
    srv = start(server, 'request_id_header = "X-Trace"')
    status, headers, body = srv.get("/trace", headers={"X-Trace": "t-1", "X-Request-Id": "nope"})
    assert headers["x-trace"] == "t-1" and "x-request-id" not in headers
    assert body == b"t-1|t-1"
    status, headers, body = srv.get("/trace")
    assert HEX32.match(headers["x-trace"])
    assert body.decode() == f"{headers['x-trace']}|{headers['x-trace']}"


def test_request_id_header_off(server):
    srv = start(server, 'request_id_header = ""')
    status, headers, body = srv.get("/show", headers={"X-Request-Id": "ignored"})
    assert "x-request-id" not in headers
    own, var, forwarded = body.decode().split("|")
    assert HEX32.match(own) and own == var
    assert forwarded == "ignored"  # the client's header passes through untouched


def test_invalid_header_name_is_a_config_error(tmp_path):
    import pytest

    from edgeworker.config import ConfigError, loads

    with pytest.raises(ConfigError) as err:
        loads('[http]\nrequest_id_header = "X Bad"\n[[server]]\n', str(tmp_path / "x.toml"))
    assert 'http.request_id_header: invalid header name "X Bad"' in str(err.value)


def test_a_framing_header_cannot_be_the_request_id_header(tmp_path):
    import pytest

    from edgeworker.config import ConfigError, loads

    for name in ("Host", "content-length", "Transfer-Encoding", "Connection"):
        with pytest.raises(ConfigError) as err:
            loads(f'[http]\nrequest_id_header = "{name}"\n[[server]]\n', str(tmp_path / "x.toml"))
        assert f'http.request_id_header: "{name}" frames or routes the request' in str(err.value)


def test_request_ids_are_unique_and_not_shared_with_a_forked_child():
    import os

    from edgeworker.request import new_request_id

    first = [new_request_id() for _ in range(300)]  # spans several batches
    assert len(set(first)) == 300 and all(HEX32.match(i) for i in first)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next ids must differ from the parent's next ids
        os.write(w, "".join(new_request_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    os.close(r)
    parent = "".join(new_request_id() for _ in range(10))
    assert len(child) == 320 and child != parent
    assert not {child[i : i + 32] for i in range(0, 320, 32)} & set(first)


def test_error_log_lines_of_a_request_carry_its_id_and_the_worker_id(server):
    srv = start(server)
    srv.wait_log("timer says hi")
    status, headers, _ = srv.get("/noisy", headers={"X-Request-Id": "noisy-1"})
    assert status == 200
    status, headers, _ = srv.get("/boom")
    assert status == 500
    boom_id = headers["x-request-id"]
    srv.wait_log("kaboom")
    log = srv.errors()
    noisy = [line for line in log.splitlines() if "noisy handler says hi" in line]
    assert len(noisy) == 1
    assert re.search(r"\[warn\] \d+#0: \*noisy-1: noisy handler says hi$", noisy[0]), noisy
    failed = [line for line in log.splitlines() if "handler failed" in line]
    assert len(failed) == 1 and f"#0: *{boom_id}: " in failed[0]
    # a timer is not request-scoped: no id on its line
    timer = [line for line in log.splitlines() if "timer says hi" in line]
    assert len(timer) == 1 and re.search(r"\d+#0: timer says hi$", timer[0]), timer
    # the master's lines carry no worker id
    assert re.search(r"\d+#-: edgeworker started", log)
