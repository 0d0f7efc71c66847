"""The error log takes every logger: the stdlib root logger of handler modules, ``print()``, in
nginx's line format or as JSON, filtered by the configured level; stdout stays the access log's."""

from __future__ import annotations

import json
import re

import pytest

from edgeworker.config import ConfigError, loads

from ..support import wait_until

HANDLERS = {
    "app.py": """
        import logging
        import warnings

        log = logging.getLogger(__name__)

        def talk(req):
            log.warning("handler warns %d", 42)
            log.info("info passes the level")
            log.debug("debug is below the level")
            logging.getLogger("some.library").error("a library's error")
            print("printed by the handler")
            print("part one,", end="")
            print(" part two")
            warnings.warn("a deprecated call")
            return "ok"

        def fail(req):
            try:
                raise ValueError("bad value")
            except ValueError:
                log.exception("caught it")
            return "handled"

        def init_worker():
            log.warning("init_worker logs through the root logger")
    """,
}

CONFIG = """
[main]
log_level = "info"
init_worker = "app:init_worker"
{main}
[http]
{http}
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "= /talk"
  content = "app:talk"
  [[server.location]]
  match = "= /fail"
  content = "app:fail"
"""


def test_stdlib_loggers_and_print_write_nginx_lines_with_the_request_id(server):
    srv = server(CONFIG.format(main="", http=""), files=HANDLERS, workers=1)
    status, headers, _ = srv.get("/talk", headers={"X-Request-Id": "talk-1"})
    assert status == 200
    srv.wait_log("part one, part two")
    srv.wait_log("a deprecated call")
    lines = srv.errors().splitlines()

    def line(text: str) -> str:
        found = [x for x in lines if text in x]
        assert len(found) == 1, (text, lines)
        return found[0]

    head = r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#0: \*talk-1: "
    assert re.match(head + r"handler warns 42$", line("handler warns")).group(1) == "warn"
    assert re.match(head + r"a library's error$", line("a library's error")).group(1) == "error"
    assert re.match(head + r"printed by the handler$", line("printed by")).group(1) == "notice"
    assert re.match(head + r"part one, part two$", line("part one")).group(1) == "notice"
    assert re.match(head, line("UserWarning: a deprecated call")).group(1) == "warn"  # captured
    # the level (info, not the root logger's default warning) applies to handlers' records
    assert re.match(head + r"info passes the level$", line("info passes")).group(1) == "info"
    assert not [x for x in lines if "below the level" in x]
    # outside a request: no request id
    assert re.search(
        r"\[warn\] \d+#0: init_worker logs through the root logger$", line("init_worker logs")
    )
    assert "printed by the handler" not in (srv.dir / "stdout.log").read_text()


def test_json_error_log_and_a_json_access_log_on_stdout(server):
    srv = server(
        CONFIG.format(
            main='error_log_format = "json"',
            http='access_log = "stdout"\naccess_log_format = "json"',
        ),
        files=HANDLERS,
        workers=1,
    )
    for _ in range(3):
        assert srv.get("/talk")[0] == 200
    status, headers, body = srv.get("/fail")
    assert (status, body) == (200, b"handled")
    fail_id = headers["x-request-id"]
    srv.wait_log("caught it")
    srv.wait_log("part one, part two", count=3)
    records = [json.loads(x) for x in srv.errors().splitlines()]  # every line is one object
    for r in records:
        assert {"time", "level", "pid", "worker", "logger", "message"} <= set(r), r
        assert isinstance(r["time"], float) and isinstance(r["pid"], int)
    by_message = {r["message"]: r for r in records}
    caught = by_message["caught it"]
    assert caught["level"] == "error" and caught["logger"] == "app"
    assert caught["request_id"] == fail_id and caught["worker"] == 0
    assert caught["exc_info"].startswith("Traceback (most recent call last):")
    assert caught["exc_info"].rstrip().endswith("ValueError: bad value")
    printed = by_message["printed by the handler"]
    assert printed["level"] == "notice" and printed["logger"] == "stdout"
    assert len(printed["request_id"]) == 32
    assert by_message["handler warns 42"]["level"] == "warn"
    started = [r for r in records if r["message"].startswith("edgeworker started")]
    assert started and started[0]["worker"] is None and "request_id" not in started[0]
    assert "init_worker logs through the root logger" in by_message
    assert not [r for r in records if "below the level" in r["message"]]
    # stdout holds the access log alone: every line parses, nothing printed slipped in
    access = srv.dir / "stdout.log"
    lines = wait_until(
        lambda: access.read_text().splitlines(),
        lambda lines: len(lines) >= 4,
        what="4 access log lines on stdout",
    )
    assert len(lines) == 4, lines
    docs = [json.loads(x) for x in lines]
    assert [d["uri"] for d in docs] == ["/talk"] * 3 + ["/fail"]


def test_error_log_format_is_validated(tmp_path):
    with pytest.raises(ConfigError) as err:
        loads('[main]\nerror_log_format = "xml"\n[[server]]\n', str(tmp_path / "x.toml"))
    assert 'main.error_log_format: invalid format "xml": expected "nginx" or "json"' in str(
        err.value
    )
