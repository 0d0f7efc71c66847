"""Access log formats: combined, json, and custom formats with ``$variables``."""

from __future__ import annotations

import json
import re
import time

import pytest

from edgeworker.accesslog import compile_format
from edgeworker.config import ConfigError, loads

HANDLERS = {
    "app.py": """
        def hello(req):
            req.var["user_tier"] = "gold"
            return "hello\\n"

        def log_phase(req):
            req.var["late"] = "set-in-log"
    """,
}


def start(server, fmt: str):
    fmt = fmt.replace("{", "{{").replace("}", "}}")  # the Server helper formats the config
    toml = f"""
[http]
access_log_format = {fmt}
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "= /hello"
  content = "app:hello"
  log = "app:log_phase"
  [[server.location]]
  match = "/"
  return = {{{{ status = 404 }}}}
"""
    return server(toml, files=HANDLERS, workers=1)


def test_custom_format_with_builtin_handler_set_and_missing_variables(server):
    srv = start(server, """'$remote_addr "$request" $status $body_bytes_sent $user_tier $late """
                        """${arg_x}y [$http_user_agent] $nothing $request_id'""")
    status, headers, _ = srv.get("/hello?x=1", headers={"User-Agent": 'Fancy "UA" \\o/',
                                                        "X-Request-Id": "rid-7"})
    assert status == 200
    assert srv.get("/missing")[0] == 404
    first, second = srv.access_lines(2)
    assert first == ('127.0.0.1 "GET /hello?x=1 HTTP/1.1" 200 6 gold set-in-log 1y '
                     '[Fancy \\x22UA\\x22 \\x5Co/] - rid-7')
    rid = re.search(r" (\S+)$", second).group(1)
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert second.startswith('127.0.0.1 "GET /missing HTTP/1.1" 404 ')
    assert " - - -y [" in second  # no handler variables, no ?x=: each is "-"


def test_custom_format_time_and_length_variables(server):
    srv = start(server, "'[$time_local] $request_time $msec $request_length $connection_requests'")
    before = time.time()
    raw = b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    srv.raw(raw)
    (line,) = srv.access_lines(1)
    m = re.fullmatch(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] (\d+\.\d{3}) "
                     r"(\d+\.\d{3}) (\d+) (\d+)", line)
    assert m, line
    assert float(m.group(2)) < 5
    assert before - 1 <= float(m.group(3)) <= time.time() + 1
    assert int(m.group(4)) == len(raw)  # the request id edgeworker added is not counted
    assert m.group(5) == "1"
    replaced = b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Request-Id: not valid\r\n\r\n"
    srv.raw(replaced, timeout=1.0)
    second = srv.access_lines(2)[1]
    assert int(second.split()[-2]) == len(replaced)


def test_combined_format_is_unchanged(server):
    srv = start(server, '"combined"')
    srv.get("/hello", headers={"User-Agent": "ua/1", "Referer": "http://r/"})
    (line,) = srv.access_lines(1)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^\]]+\] "GET /hello HTTP/1\.1" 200 6 '
                        r'"http://r/" "ua/1"', line), line


def test_json_format_includes_handler_variables(server):
    srv = start(server, '"json"')
    srv.get("/hello", headers={"X-Request-Id": "abc"})
    doc = json.loads(srv.access_lines(1)[0])
    assert doc["status"] == 200 and doc["request_id"] == "abc"
    assert doc["user_tier"] == "gold" and doc["late"] == "set-in-log"


def test_format_validation(tmp_path):
    def err(fmt: str) -> str:
        with pytest.raises(ConfigError) as exc:
            loads(f"[http]\naccess_log_format = '{fmt}'\n[[server]]\n", str(tmp_path / "x.toml"))
        return str(exc.value)

    assert 'http.access_log_format: invalid format "common"' in err("common")
    cfg = loads("[http]\naccess_log_format = '$status'\n[[server]]\n", str(tmp_path / "x.toml"))
    assert cfg.http.access_log_format == "$status"


def test_compile_format():
    assert compile_format('$a "${b}c" $ $1x $$d') == [
        ("a", True), (' "', False), ("b", True), ('c" $ ', False), ("1x", True),
        (" $", False), ("d", True)]
    assert compile_format("plain") == [("plain", False)]
    assert compile_format("${unclosed") == [("${unclosed", False)]
