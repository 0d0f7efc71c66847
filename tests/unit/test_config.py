"""Config loading: the TOML decoded into Structs, defaults, conversions, and every error message."""

from __future__ import annotations

import os
import textwrap

import pytest

from edgeworker import config
from edgeworker.config import (
    default_pid_file,
    load,
    loads,
    parse_handler,
    parse_listen,
    parse_match,
)
from edgeworker.errors import ConfigError
from edgeworker.proxy.schema import parse_proxy_pass, proxy_pass_tls

CFG = "/etc/edgeworker/edgeworker.toml"
MINIMAL = """
[[server]]
  [[server.location]]
  match = "/"
  content = "app:hello"
"""

# A full example config, with every kind of key.
SPEC_EXAMPLE = r"""
[main]
workers = 2
worker_connections = 1024
pid_file = "/run/edgeworker.pid"
error_log = "stderr"
log_level = "info"
python_path = ["handlers"]
init = "app:init"
init_worker = "app:init_worker"
exit_worker = "app:exit_worker"
code_cache = true
graceful_timeout = "30s"
max_pending_timers = 1024
max_running_timers = 256

[http]
access_log = "stdout"
access_log_format = "combined"
keepalive_timeout = "75s"
keepalive_requests = 1000
client_header_timeout = "60s"
client_body_timeout = "60s"
send_timeout = "60s"
client_max_body_size = "1m"
max_request_line = "8k"
max_header_size = "8k"
max_headers = 100

[shared_dict]
counters = "1m"
rate_limit = "10m"

[redis.default]
url = "redis://127.0.0.1:6379/0"
connect_timeout = "100ms"
timeout = "100ms"
pool_size = 100

[upstream.backend]
servers = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 2, max_fails = 3, fail_timeout = "10s", backup = false }]
balance = "round_robin"
keepalive = 32
connect_timeout = "5s"
read_timeout = "60s"
send_timeout = "60s"

[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["example.com", "*.example.com"]

  [[server.location]]
  match = "/api/"
  rewrite = "app:rewrite"
  access = ["app:rate_limit", "app:auth"]
  content = "app:handler"
  limit = { key = "$binary_remote_addr", rate = "60r/m", burst = 0, store = "redis:default", fail = "open", status = 429 }
  jwt = { secret = "env:JWT_SECRET", algorithms = ["HS256"], claims_to_headers = { sub = "X-User-Id", role = "X-User-Role" } }
  header_filter = "app:headers"
  body_filter = "app:body"
  log = "app:log"
  default_type = "text/plain"
  add_header = { X-Frame-Options = "DENY" }
  client_max_body_size = "10m"

  [[server.location]]
  match = "/backend/"
  proxy_pass = "http://backend"
  proxy_set_header = { X-Real-IP = "$remote_addr" }

  [[server.location]]
  match = "= /old"
  return = { status = 301, location = "https://example.com/" }

  [[server.location]]
  match = "= /ok"
  return = { status = 200, body = "ok" }

  [[server.location]]
  match = "^~ /static/"
  root = "/var/www"

  [[server.location]]
  match = "= /status"
  status = "json"
"""


def errors_of(text: str, path: str = CFG) -> list[str]:
    with pytest.raises(ConfigError) as e:
        loads(textwrap.dedent(text), path)
    assert e.value.file == path
    return e.value.errors


def one_error(text: str) -> str:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


def server_with(location: str, extra: str = "") -> str:
    return f"{extra}\n[[server]]\n  [[server.location]]\n{textwrap.dedent(location)}"


# --- the whole SPEC example ----------------------------------------------------------------------


def test_spec_example_loads_with_every_value_converted():
    cfg = loads(SPEC_EXAMPLE, CFG)
    assert cfg.file == CFG and cfg.directory == "/etc/edgeworker"
    m = cfg.main
    assert (m.workers, m.worker_connections, m.pid_file) == (2, 1024, "/run/edgeworker.pid")
    assert m.python_path == ("/etc/edgeworker/handlers",)
    assert (m.init, m.init_worker, m.exit_worker) == (
        ("app:init",), ("app:init_worker",), ("app:exit_worker",))
    assert m.graceful_timeout == 30.0 and isinstance(m.graceful_timeout, float)
    h = cfg.http
    assert h.keepalive_timeout == 75.0 and h.client_max_body_size == 1024 * 1024
    assert (h.max_request_line, h.max_header_size, h.max_headers) == (8192, 8192, 100)
    assert cfg.shared_dict == {"counters": 1024**2, "rate_limit": 10 * 1024**2}
    r = cfg.redis["default"]
    assert (r.name, r.url, r.connect_timeout, r.timeout, r.pool_size) == (
        "default", "redis://127.0.0.1:6379/0", 0.1, 0.1, 100)
    u = cfg.upstream["backend"]
    assert u.name == "backend"
    assert [(s.address, s.weight, s.max_fails, s.fail_timeout, s.backup) for s in u.servers] == [
        ("127.0.0.1:9001", 1, 1, 10.0, False), ("127.0.0.1:9002", 2, 3, 10.0, False)]
    assert (u.balance, u.keepalive, u.connect_timeout, u.read_timeout) == (
        "round_robin", 32, 5.0, 60.0)
    (server,) = cfg.server
    assert server.listen == ("127.0.0.1:8080",) and server.path == "server[0]"
    assert server.server_name == ("example.com", "*.example.com")
    api, backend, old, ok, static, status = server.location
    assert api.path == "server[0].location[0]"
    assert api.rewrite == ("app:rewrite",) and api.access == ("app:rate_limit", "app:auth")
    assert api.content == "app:handler" and api.log == ("app:log",)
    assert api.limit.rate == 1.0 and api.limit.rate.count == 60
    assert api.limit.store == "redis:default"
    assert api.jwt.algorithms == ("HS256",) and api.jwt.secret == "env:JWT_SECRET"
    assert api.jwt.claims_to_headers == {"sub": "X-User-Id", "role": "X-User-Role"}
    assert api.add_header == {"X-Frame-Options": "DENY"}
    assert api.client_max_body_size == 10 * 1024**2
    assert backend.proxy_pass == "http://backend"
    assert backend.proxy_set_header == {"X-Real-IP": "$remote_addr"}
    assert backend.client_max_body_size == 1024**2
    assert (old.return_.status, old.return_.location) == (301, "https://example.com/")
    assert (ok.return_.status, ok.return_.body) == (200, "ok")
    assert static.root == "/var/www" and static.index == ("index.html",)
    assert status.status == "json"


# --- defaults -------------------------------------------------------------------------------------


def test_absent_keys_take_spec_defaults():
    cfg = loads(MINIMAL, CFG)
    m, h = cfg.main, cfg.http
    assert m.workers == 2 and m.worker_connections == 1024
    assert m.pid_file is None and m.error_log == "stderr" and m.log_level == "info"
    assert m.python_path == ("/etc/edgeworker/handlers",)
    assert m.init == m.init_worker == m.exit_worker == ()
    assert m.code_cache is True and m.graceful_timeout == 30.0
    assert (m.max_pending_timers, m.max_running_timers) == (1024, 256)
    assert (h.access_log, h.access_log_format) == ("stdout", "combined")
    assert (h.keepalive_timeout, h.keepalive_requests) == (75.0, 1000)
    assert h.client_header_timeout == h.client_body_timeout == h.send_timeout == 60.0
    assert h.client_max_body_size == 1024**2
    assert (h.max_request_line, h.max_header_size, h.max_headers) == (8192, 8192, 100)
    assert (h.underscores_in_headers, h.ignore_invalid_headers) == (False, True)
    assert cfg.shared_dict == {} and cfg.redis == {} and cfg.upstream == {}
    (server,) = cfg.server
    assert server.listen == ("127.0.0.1:8080",) and server.server_name == ("",)
    (loc,) = server.location
    assert loc.default_type == "text/plain" and loc.add_header == {}
    assert loc.index == ("index.html",)
    for phase in config.PHASES:
        assert getattr(loc, phase) == ()


def test_redis_and_upstream_server_defaults():
    cfg = loads('[redis.cache]\n[upstream.b]\nservers = ["b.internal:80"]\n' + MINIMAL, CFG)
    r = cfg.redis["cache"]
    assert (r.url, r.connect_timeout, r.timeout, r.pool_size) == (
        "redis://127.0.0.1:6379/0", 0.1, 0.1, 100)
    (s,) = cfg.upstream["b"].servers
    assert (s.address, s.weight, s.max_fails, s.fail_timeout, s.backup) == (
        "b.internal:80", 1, 1, 10.0, False)


def test_limit_and_jwt_defaults():
    cfg = loads(server_with("""
        match = "/"
        content = "app:x"
        limit = { rate = "10r/s", store = "shm:rl" }
        jwt = { secret = "s", algorithms = ["HS256"] }
    """, '[shared_dict]\nrl = "1m"'), CFG)
    loc = cfg.server[0].location[0]
    assert (loc.limit.key, loc.limit.burst, loc.limit.fail, loc.limit.status) == (
        "$binary_remote_addr", 0, "open", 429)
    assert (loc.jwt.issuer, loc.jwt.audience, loc.jwt.leeway) == (None, None, 0.0)
    assert loc.jwt.claims_to_headers == {} and loc.jwt.realm == "edgeworker"


# --- conversions ----------------------------------------------------------------------------------


def test_workers_auto_is_cpu_count():
    cfg = loads('[main]\nworkers = "auto"\n' + MINIMAL, CFG)
    assert cfg.main.workers == os.cpu_count()


def test_relative_paths_are_resolved_against_the_config_folder():
    cfg = loads(textwrap.dedent("""
        [main]
        python_path = ["handlers", "../lib", "/abs"]
        error_log = "logs/error.log"
        pid_file = "run/ew.pid"
        [http]
        access_log = "logs/access.log"
        [[server]]
          [[server.location]]
          match = "/"
          root = "www"
          [[server.location]]
          match = "/p/"
          content = "a:b"
          jwt = { public_key = "file:keys/pub.pem", algorithms = ["RS256"] }
    """), "/srv/ew/conf/ew.toml")
    assert cfg.main.python_path == ("/srv/ew/conf/handlers", "/srv/ew/lib", "/abs")
    assert cfg.main.error_log == "/srv/ew/conf/logs/error.log"
    assert cfg.main.pid_file == "/srv/ew/conf/run/ew.pid"
    assert cfg.http.access_log == "/srv/ew/conf/logs/access.log"
    assert cfg.server[0].location[0].root == "/srv/ew/conf/www"
    assert cfg.server[0].location[1].jwt.public_key == "file:/srv/ew/conf/keys/pub.pem"


def test_special_log_targets_are_not_paths():
    cfg = loads('[main]\nerror_log = "stderr"\n[http]\naccess_log = "off"\n' + MINIMAL, CFG)
    assert cfg.main.error_log == "stderr" and cfg.http.access_log == "off"


def test_relative_config_path_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "ew.toml").write_text(MINIMAL)
    monkeypatch.chdir(tmp_path)
    cfg = load("ew.toml")
    assert cfg.file == str(tmp_path / "ew.toml")
    assert cfg.main.python_path == (str(tmp_path / "handlers"),)


def test_handler_fields_accept_one_string_or_a_list():
    cfg = loads(textwrap.dedent("""
        [main]
        init = ["a:one", "b.c:two"]
        [[server]]
          [[server.location]]
          match = "/"
          access = "app:auth"
          log = ["app:log1", "app:log2"]
          content = "app:Handler.serve"
    """), CFG)
    loc = cfg.server[0].location[0]
    assert cfg.main.init == ("a:one", "b.c:two")
    assert loc.access == ("app:auth",) and loc.log == ("app:log1", "app:log2")
    assert isinstance(loc.access, tuple)


def test_http_handlers_are_inherited_unless_the_location_sets_its_own():
    cfg = loads(textwrap.dedent("""
        [http]
        access = "app:auth"
        log = ["app:log"]
        client_max_body_size = "2m"
        [[server]]
          [[server.location]]
          match = "/a"
          content = "app:a"
          [[server.location]]
          match = "/b"
          content = "app:b"
          access = "app:other"
          client_max_body_size = "5m"
          [[server.location]]
          match = "/open"
          content = "app:c"
          access = []
    """), CFG)
    a, b, c = cfg.server[0].location
    assert a.access == ("app:auth",) and a.log == ("app:log",)
    assert a.client_max_body_size == 2 * 1024**2
    assert b.access == ("app:other",) and b.log == ("app:log",)
    assert b.client_max_body_size == 5 * 1024**2
    assert c.access == ()


def test_listen_and_server_name_are_normalized():
    cfg = loads(textwrap.dedent("""
        [[server]]
        listen = ["8080", ":8081", "*:8082", "[::1]:8083", "localhost:8084", "8080"]
        server_name = ["Example.COM.", "*.Example.com"]
          [[server.location]]
          match = "/"
          content = "a:b"
    """), CFG)
    server = cfg.server[0]
    assert server.listen == ("0.0.0.0:8080", "0.0.0.0:8081", "0.0.0.0:8082", "[::1]:8083",
                             "127.0.0.1:8084")
    assert server.server_name == ("example.com", "*.example.com")


def test_listen_accepts_a_single_string():
    cfg = loads('[[server]]\nlisten = "127.0.0.1:9000"\n', CFG)
    assert cfg.server[0].listen == ("127.0.0.1:9000",) and cfg.server[0].location == ()


# --- errors: decoding -----------------------------------------------------------------------------


def test_unknown_location_key_names_its_path():
    assert one_error(server_with('match = "/"\ncontent = "a:b"\nacces = "a:c"')) == (
        'server[0].location[0]: unknown key "acces" (did you mean "access"?)')


def test_unknown_keys_at_every_level():
    errors = errors_of(textwrap.dedent("""
        log_level = "info"
        [main]
        worker = 2
        [http]
        keepalive = "5s"
        [redis.r]
        host = "x"
        [upstream.u]
        servers = [{ address = "a:1", weigth = 2 }]
        [[server]]
        name = "x"
    """))
    assert errors == [
        'log_level: unknown key "log_level" (top level takes main, http, shared_dict, redis, '
        'upstream, server)',
        'main: unknown key "worker" (did you mean "workers"?)',
        'http: unknown key "keepalive" (did you mean "keepalive_timeout"?)',
        'redis.r: unknown key "host"',
        'upstream.u.servers[0]: unknown key "weigth" (did you mean "weight"?)',
        'server[0]: unknown key "name"',
    ]


def test_internal_field_names_are_not_config_keys():
    assert one_error(server_with('match = "/"\ncontent = "a:b"\n__path__ = "x"')) == (
        'server[0].location[0]: unknown key "__path__"')


def test_type_errors_are_worded_for_toml():
    assert one_error("[main]\nworker_connections = \"many\"\n" + MINIMAL) == (
        "main.worker_connections: expected int, got str")
    assert one_error("[main]\nworker_connections = 0\n" + MINIMAL) == (
        "main.worker_connections: expected int >= 1")
    assert one_error(server_with('match = "/"\ncontent = "a:b"\nadd_header = ["x"]')) == (
        "server[0].location[0].add_header: expected table, got list")


def test_missing_required_key():
    assert one_error(server_with('content = "a:b"')) == (
        'server[0].location[0]: missing required key "match"')


def test_bad_units_name_the_key():
    assert one_error('[http]\nkeepalive_timeout = "5 years"\n' + MINIMAL) == (
        'http.keepalive_timeout: invalid duration "5 years": expected a number with ms, s, m, h '
        'or d (e.g. "500ms", "30s", "5m", "1h")')
    assert one_error('[http]\nclient_max_body_size = "10mb"\n' + MINIMAL).startswith(
        'http.client_max_body_size: invalid size "10mb"')
    assert one_error('[shared_dict]\nc = "lots"\n' + MINIMAL).startswith(
        'shared_dict.c: invalid size "lots"')
    assert one_error('[main]\nworkers = "many"\n' + MINIMAL) == (
        "main.workers: invalid workers 'many': expected an integer >= 1 or \"auto\"")


def test_toml_syntax_error_has_line_and_column():
    with pytest.raises(ConfigError) as e:
        loads('[main]\nworkers = 2\nlog_level = "info\n', CFG)
    assert e.value.errors == ["TOML syntax error: Illegal character '\\n'"]
    assert str(e.value) == f"{CFG}:3:18: TOML syntax error: Illegal character '\\n'"
    # an error at the end of the document is on its last line
    with pytest.raises(ConfigError) as e:
        loads("[main]\nworkers = [1,\n", CFG)
    assert str(e.value) == f"{CFG}:2: TOML syntax error: Invalid value"


def test_errors_in_separate_tables_are_all_reported():
    errors = errors_of(textwrap.dedent("""
        [main]
        workers = 0
        [http]
        send_timeout = "x"
        [[server]]
          [[server.location]]
          match = "/a"
          acces = "a:b"
          [[server.location]]
          match = "/b"
          content = "a:b"
          root = "/x"
        [[server]]
        listen = ["nope"]
        [[server]]
        listne = ["8080"]
          [[server.location]]
          match = "nope"
          content = "a:b"
    """))
    assert [e.split(":")[0] for e in errors] == [
        "main.workers", "http.send_timeout", "server[0].location[0]", "server[0].location[1]",
        "server[1].listen[0]", "server[2]", "server[2].location[0].match"]


def test_load_reports_an_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path / "missing.toml"))
    assert e.value.file == str(tmp_path / "missing.toml")
    assert e.value.errors[0].startswith("cannot read: ")
    assert str(e.value).startswith(str(tmp_path / "missing.toml") + ": cannot read: ")


# --- errors: semantic checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ('match = "/"', "none"),
        ('match = "/"\ncontent = "a:b"\nroot = "/x"', "content, root"),
        ('match = "/"\nstatus = "json"\nproxy_pass = "http://h:1"\nreturn = { status = 204 }',
         "proxy_pass, return, status"),
    ],
)
def test_location_needs_exactly_one_content_kind(body, found):
    assert one_error(server_with(body)) == (
        "server[0].location[0]: exactly one of content, proxy_pass, return, root, status is "
        f"required (found: {found})")


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ("api", 'invalid match "api": a prefix or exact match must start with "/" '
                '(use "~ regex" or "~* regex" for regular expressions)'),
        ("= api", 'invalid match "= api": a prefix or exact match must start with "/" '
                  '(use "~ regex" or "~* regex" for regular expressions)'),
        ("~ (", 'invalid regex "(": missing ), unterminated subpattern at position 0'),
        ("~* [a-", 'invalid regex "[a-": unterminated character set at position 0'),
        ("=", 'invalid match "=": empty pattern'),
        ("/a b", 'invalid match "/a b": whitespace in the URI'),
    ],
)
def test_match_syntax_errors(match, message):
    assert one_error(server_with(f'match = "{match}"\ncontent = "a:b"')) == (
        f"server[0].location[0].match: {message}")


def test_duplicate_locations_in_one_server():
    text = textwrap.dedent("""
        [[server]]
          [[server.location]]
          match = "/api/"
          content = "a:b"
          [[server.location]]
          match = "= /api/"
          content = "a:b"
          [[server.location]]
          match = "^~ /api/"
          content = "a:b"
          [[server.location]]
          match = "~ ^/x"
          content = "a:b"
          [[server.location]]
          match = "~* ^/x"
          content = "a:b"
          [[server.location]]
          match = "~ ^/x"
          content = "a:b"
        [[server]]
        listen = ["9000"]
          [[server.location]]
          match = "/api/"
          content = "a:b"
    """)
    assert errors_of(text) == [
        'server[0].location[2].match: duplicate location "^~ /api/" (also server[0].location[0])',
        'server[0].location[5].match: duplicate location "~ ^/x" (also server[0].location[3])',
    ]


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("300.1.1.1:80", 'invalid listen "300.1.1.1:80": "300.1.1.1" is not an IPv4 address '
                         '(write IPv6 as "[::1]:8080")'),
        ("127.0.0.1", 'invalid listen "127.0.0.1": expected "ADDRESS:PORT", "[IPv6]:PORT", '
                      '":PORT" or "PORT"'),
        ("127.0.0.1:0", 'invalid listen "127.0.0.1:0": port must be 1-65535'),
        ("70000", 'invalid listen "70000": port must be 1-65535'),
        ("[::1]8080", 'invalid listen "[::1]8080": expected "[IPv6]:PORT"'),
        ("[zz]:80", 'invalid listen "[zz]:80": "zz" is not an IPv6 address'),
        ("example.com:80", 'invalid listen "example.com:80": "example.com" is not an IPv4 '
                           'address (write IPv6 as "[::1]:8080")'),
    ],
)
def test_listen_syntax_errors(listen, message):
    assert one_error(f'[[server]]\nlisten = ["{listen}"]\n') == f"server[0].listen[0]: {message}"


@pytest.mark.parametrize(
    ("ret", "message"),
    [
        ("{ status = 302 }", "server[0].location[0].return: status 302 is a redirect and needs a "
                             "location"),
        ("{ status = 99 }", "server[0].location[0].return.status: invalid status 99: must be "
                            "100-599"),
        ('{ status = 200, location = "/x" }', "server[0].location[0].return.location: location "
         "is only used with 301, 302, 303, 307, 308 (status is 200)"),
        ('{ status = 301, location = "/x", body = "b" }',
         "server[0].location[0].return.body: a redirect takes a location, not a body"),
        ("{ body = \"x\" }", 'server[0].location[0].return: missing required key "status"'),
    ],
)
def test_return_checks(ret, message):
    assert one_error(server_with(f'match = "/"\nreturn = {ret}')) == message


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_with_location_is_valid(status):
    cfg = loads(server_with(f'match = "/"\nreturn = {{ status = {status}, location = "/n" }}'), CFG)
    assert cfg.server[0].location[0].return_.status == status


def test_status_kind():
    assert one_error(server_with('match = "/"\nstatus = "html"')) == (
        'server[0].location[0].status: invalid status "html": expected "json", "prometheus" or '
        '"dashboard"')
    for kind in ("json", "prometheus", "dashboard"):
        loads(server_with(f'match = "/"\nstatus = "{kind}"'), CFG)


@pytest.mark.parametrize("spec", ["app", "app.auth", "app:", ":auth", "app:auth:x", "a-b:c",
                                  "app:1x", "app :auth"])
def test_handler_spec_syntax(spec):
    assert one_error(server_with(f'match = "/"\ncontent = "a:b"\naccess = ["a:ok", "{spec}"]')) == (
        f'server[0].location[0].access: invalid handler "{spec}": expected "module:function"')


def test_handler_spec_errors_everywhere_are_collected():
    errors = errors_of(textwrap.dedent("""
        [main]
        init = "nocolon"
        [http]
        log = "x"
        [[server]]
          [[server.location]]
          match = "/"
          content = "bad"
          body_filter = "y"
    """))
    assert [e.split(":")[0] for e in errors] == [
        "main.init", "http.log", "server[0].location[0].content",
        "server[0].location[0].body_filter"]


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("http://nowhere", 'invalid proxy_pass "http://nowhere": no upstream named "nowhere" '
                           '(a direct address needs "host:port")'),
        ("ftp://h:21", 'invalid proxy_pass "ftp://h:21": expected "http(s)://UPSTREAM" or '
                       '"http(s)://host:port[/prefix]"'),
        ("backend", 'invalid proxy_pass "backend": expected "http(s)://UPSTREAM" or '
                    '"http(s)://host:port[/prefix]"'),
        ("http://h:99999", 'invalid address "h:99999": port must be 1-65535'),
        ("http:///x", 'invalid proxy_pass "http:///x": missing host'),
    ],
)
def test_proxy_pass_errors(proxy, message):
    assert one_error(server_with(f'match = "/"\nproxy_pass = "{proxy}"')) == (
        f"server[0].location[0].proxy_pass: {message}")


def test_parse_proxy_pass_forms():
    ups = {"backend": object()}
    assert parse_proxy_pass("http://backend", ups) == ("backend", "backend", 0, "")
    assert parse_proxy_pass("http://backend/v1/", ups) == ("backend", "backend", 0, "/v1/")
    assert parse_proxy_pass("http://127.0.0.1:9000", ups) == (None, "127.0.0.1", 9000, "")
    assert parse_proxy_pass("http://app.internal:80/x", ups) == (None, "app.internal", 80, "/x")
    assert parse_proxy_pass("http://[::1]:81", ups) == (None, "::1", 81, "")
    assert parse_proxy_pass("https://api.example:443/v2/", ups) == (None, "api.example", 443,
                                                                      "/v2/")
    assert parse_proxy_pass("HTTPS://backend", ups) == ("backend", "backend", 0, "")
    assert proxy_pass_tls("HTTPS://backend") and not proxy_pass_tls("http://backend")


def test_proxy_ssl_keys(tmp_path):
    loc = 'match = "/"\nproxy_pass = "https://api.example:443"\n'
    cfg = loads(server_with(loc), CFG)
    l0 = cfg.server[0].location[0]
    assert (l0.proxy_ssl_verify, l0.proxy_ssl_name, l0.proxy_ssl_trusted_certificate) == (
        True, "", None)
    err = one_error(server_with(loc + f'proxy_ssl_trusted_certificate = "{tmp_path}/none.pem"'))
    assert err.startswith("server[0].location[0].proxy_ssl_trusted_certificate: cannot load")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    err = one_error(server_with(loc + f'proxy_ssl_trusted_certificate = "{bad}"'))
    assert "cannot load" in err
    err = one_error(server_with(loc + f'proxy_ssl_certificate = "{bad}"'))
    assert "proxy_ssl_certificate and proxy_ssl_certificate_key go together" in err
    err = one_error(server_with(loc + f'proxy_ssl_certificate = "{bad}"\n'
                                f'proxy_ssl_certificate_key = "{bad}"'))
    assert err.startswith("server[0].location[0].proxy_ssl_certificate: cannot load")


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ('{ rate = "10r/s", store = "shm:nope" }',
         'limit.store: no shared_dict named "nope" (declare it in [shared_dict])'),
        ('{ rate = "10r/s", store = "redis:nope" }',
         'limit.store: no redis named "nope" (declare it as [redis.nope])'),
        ('{ rate = "10r/s", store = "memcached:x" }',
         'limit.store: invalid store "memcached:x": expected "shm:NAME" or "redis:NAME"'),
        ('{ rate = "10 per second", store = "shm:rl" }',
         'limit.rate: invalid rate "10 per second": expected "N r/s", "N r/m" or "N r/h" '
         '(e.g. "60r/m")'),
        ('{ rate = "1r/s", store = "shm:rl", fail = "maybe" }',
         'limit.fail: invalid fail "maybe": expected "open" or "closed"'),
        ('{ rate = "1r/s", store = "shm:rl", status = 200 }',
         "limit.status: invalid status 200: must be 400-599"),
        ('{ store = "shm:rl" }', 'limit: missing required key "rate"'),
    ],
)
def test_limit_checks(limit, message):
    text = server_with(f'match = "/"\ncontent = "a:b"\nlimit = {limit}',
                       '[shared_dict]\nrl = "1m"\n[redis.default]')
    assert one_error(text) == f"server[0].location[0].{message}"


def test_limit_store_in_redis_is_accepted():
    cfg = loads(server_with('match = "/"\ncontent = "a:b"\n'
                            'limit = { rate = "100r/h", store = "redis:main", burst = 5 }',
                            "[redis.main]"), CFG)
    assert cfg.server[0].location[0].limit.burst == 5


@pytest.mark.parametrize(
    ("jwt", "messages"),
    [
        ('{ secret = "s", algorithms = [] }',
         ["jwt.algorithms: at least one algorithm is required"]),
        ('{ secret = "s" }', ['jwt: missing required key "algorithms"']),
        ('{ algorithms = ["HS256"] }',
         ["jwt: exactly one key source is required: secret, public_key or jwks_url (found: none)",
          "jwt: HS256 needs a secret"]),
        ('{ secret = "s", algorithms = ["none"] }',
         ['jwt.algorithms: unsupported algorithm "none": expected any of ES256, ES256K, ES384, '
          "ES512, EdDSA, HS256, HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512"]),
        ('{ secret = "s", algorithms = ["RS256"] }',
         ["jwt.secret: RS256 needs public_key or jwks_url, not a secret"]),
        ('{ public_key = "file:k.pem", algorithms = ["HS256", "RS256"] }',
         ["jwt.algorithms: do not mix HMAC (HS*) and public-key algorithms in one location "
          "(algorithm confusion)", "jwt: HS256 needs a secret"]),
        ('{ secret = "s", public_key = "k", algorithms = ["HS256"] }',
         ["jwt: exactly one key source is required: secret, public_key or jwks_url "
          "(found: secret, public_key)"]),
        ('{ jwks_url = "ftp://x", algorithms = ["RS256"] }',
         ['jwt.jwks_url: invalid url "ftp://x": expected http(s)://']),
        ('{ secret = "env:", algorithms = ["HS256"] }', ["jwt.secret: env: needs a variable name"]),
    ],
)
def test_jwt_checks(jwt, messages):
    errors = errors_of(server_with(f'match = "/"\ncontent = "a:b"\njwt = {jwt}'))
    assert errors == [f"server[0].location[0].{m}" for m in messages]


def test_jwt_accepts_a_matching_key_source():
    cfg = loads(server_with('match = "/"\ncontent = "a:b"\njwt = { jwks_url = '
                            '"https://idp/jwks", algorithms = ["RS256", "ES256"], '
                            'audience = "api", leeway = "30s" }'), CFG)
    jwt = cfg.server[0].location[0].jwt
    assert jwt.audience == ("api",) and jwt.leeway == 30.0


def test_log_level_and_access_log_format():
    assert one_error('[main]\nlog_level = "loud"\n' + MINIMAL) == (
        'main.log_level: invalid level "loud": expected one of debug, info, notice, warn, '
        "warning, error, crit")
    assert one_error('[http]\naccess_log_format = "common"\n' + MINIMAL) == (
        'http.access_log_format: invalid format "common": expected "combined", "json" or a '
        'format with $variables')
    for level in config.LOG_LEVELS:
        assert loads(f'[main]\nlog_level = "{level}"\n' + MINIMAL, CFG).main.log_level == level


def test_at_least_one_server():
    assert one_error("[main]\nworkers = 1\n") == "server: at least one [[server]] is required"
    assert one_error("server = []\n") == "server: at least one [[server]] is required"
    assert one_error('server = "x"\n') == "server: expected an array of tables ([[server]])"


def test_conflicting_server_names_on_one_address():
    errors = errors_of(textwrap.dedent("""
        [[server]]
        listen = ["127.0.0.1:8080", "127.0.0.1:8081"]
        server_name = ["a.example", "b.example"]
        [[server]]
        listen = ["127.0.0.1:8081"]
        server_name = ["B.example."]
        [[server]]
        listen = ["127.0.0.1:8082"]
        server_name = ["a.example"]
        [[server]]
        listen = ["8083"]
        [[server]]
        listen = [":8083"]
    """))
    assert errors == [
        'server[1].server_name: conflicting server name "b.example" on 127.0.0.1:8081 '
        "(also in server[0])",
        'server[4].server_name: conflicting server name "" on 0.0.0.0:8083 (also in server[3])',
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("w*.example.com", 'invalid server name "w*.example.com": a wildcard is "*.example.com" '
                           'or "www.example.*"'),
        ("*.*.example.com", 'invalid server name "*.*.example.com": a wildcard is '
                            '"*.example.com" or "www.example.*"'),
        ("~^(www", 'invalid regex "^(www": missing ), unterminated subpattern at position 1'),
    ],
)
def test_server_name_syntax(name, message):
    assert one_error(f'[[server]]\nserver_name = ["ok.example", "{name}"]\n') == (
        f"server[0].server_name[1]: {message}")


def test_upstream_checks():
    errors = errors_of(textwrap.dedent("""
        [upstream.a]
        servers = []
        [upstream.b]
        servers = ["nohost", { address = "h:1", backup = true }]
        balance = "ip_hash"
        [upstream.c]
        servers = ["h:1"]
        balance = "fastest"
        [upstream.d]
        servers = [{ address = "h:1", backup = true }]
        [redis.r]
        url = "http://x"
    """) + MINIMAL)
    assert errors == [
        'redis.r.url: invalid url "http://x": expected redis://, rediss:// or unix://',
        "upstream.a.servers: an upstream needs at least one server",
        'upstream.b.servers[0]: invalid address "nohost": expected "host:port"',
        'upstream.b.servers[1]: backup servers cannot be used with "ip_hash"',
        'upstream.c.balance: invalid balance "fastest": expected one of round_robin, least_conn, '
        "ip_hash, hash, random",
        "upstream.d.servers: an upstream needs at least one non-backup server",
    ]


def test_hash_balance_keys():
    ok = loads(textwrap.dedent("""
        [upstream.h]
        servers = ["a:1", { address = "b:1", max_conns = 8 }]
        balance = "hash"
        hash = "$request_uri"
        consistent = true
    """) + MINIMAL, CFG)
    up = ok.upstream["h"]
    assert (up.balance, up.hash, up.consistent) == ("hash", "$request_uri", True)
    assert [s.max_conns for s in up.servers] == [0, 8]
    errors = errors_of(textwrap.dedent("""
        [upstream.nokey]
        servers = ["a:1"]
        balance = "hash"
        [upstream.stray]
        servers = ["a:1"]
        hash = "$uri"
        [upstream.backup]
        servers = ["a:1", { address = "b:1", backup = true }]
        balance = "hash"
        hash = "$uri"
    """) + MINIMAL)
    rnd = loads(textwrap.dedent("""
        [upstream.r]
        servers = ["a:1", "b:1"]
        balance = "random"
        two = true
    """) + MINIMAL, CFG)
    assert (rnd.upstream["r"].balance, rnd.upstream["r"].two) == ("random", True)
    assert one_error(textwrap.dedent("""
        [upstream.r]
        servers = ["a:1"]
        two = true
    """) + MINIMAL) == 'upstream.r.two: only for balance = "random"'
    assert errors == [
        'upstream.nokey.hash: balance = "hash" needs a key, e.g. hash = "$request_uri"',
        'upstream.stray.hash: only for balance = "hash"',
        'upstream.backup.servers[1]: backup servers cannot be used with "hash"',
    ]


def test_shared_dict_checks():
    errors = errors_of('[shared_dict]\n"9lives" = "1m"\ntiny = 100\n' + MINIMAL)
    assert errors == [
        "shared_dict.9lives: a shared dict name is letters, digits, _ and -, not starting with a "
        "digit",
        "shared_dict.tiny: size 100 is too small (minimum 16k)",
    ]


def test_header_names_are_checked():
    text = server_with('match = "/"\ncontent = "a:b"\nadd_header = { "X Bad" = "1" }')
    assert one_error(text) == (
        'server[0].location[0].add_header: invalid header name "X Bad"')


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("[0:0::1]:80", ("::1", 80)),
        ("[::]:80", ("::", 80)),
        (":8080", ("0.0.0.0", 8080)),
        ("*:8080", ("0.0.0.0", 8080)),
        ("8080", ("0.0.0.0", 8080)),
        ("localhost:80", ("127.0.0.1", 80)),
    ],
)
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected
    assert config.format_listen(*expected) == (
        f"[{expected[0]}]:{expected[1]}" if ":" in expected[0] else f"{expected[0]}:{expected[1]}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/api/", ("", "/api/")),
        ("= /", ("=", "/")),
        ("=/exact", ("=", "/exact")),
        ("^~ /images/", ("^~", "/images/")),
        (r"~ \.(gif|jpg)$", ("~", r"\.(gif|jpg)$")),
        (r"~*\.PNG$", ("~*", r"\.PNG$")),
    ],
)
def test_parse_match(text, expected):
    assert parse_match(text) == expected


def test_parse_handler():
    assert parse_handler("pkg.mod:Cls.method") == ("pkg.mod", "Cls.method")
    with pytest.raises(ValueError, match='invalid handler "x": expected "module:function"'):
        parse_handler("x")


def test_default_pid_file_prefers_run_then_xdg_then_tmp(monkeypatch, tmp_path):
    real_access = os.access
    writable_run = {"value": True}

    def fake_access(path, mode, *a, **k):
        if path == "/run":
            return writable_run["value"]
        return real_access(path, mode, *a, **k)

    monkeypatch.setattr(config.os, "access", fake_access)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    if os.path.isdir("/run"):
        assert default_pid_file() == "/run/edgeworker.pid"
    writable_run["value"] = False
    assert default_pid_file() == str(tmp_path / "edgeworker.pid")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert default_pid_file() == f"/tmp/edgeworker-{os.getuid()}.pid"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_pid_file() == f"/tmp/edgeworker-{os.getuid()}.pid"


def test_loaded_values_are_builtin_types():
    cfg = loads(SPEC_EXAMPLE, CFG)
    assert type(cfg.main.workers) is int and type(cfg.main.graceful_timeout) is float
    assert type(cfg.main.pid_file) is str and type(cfg.main.init) is tuple
    assert type(cfg.http.client_max_body_size) is int and type(cfg.http.access) is tuple
    loc = cfg.server[0].location[0]
    assert type(loc.access) is tuple and type(loc.client_max_body_size) is int
    assert type(cfg.server[0].listen) is tuple and type(loc.jwt.leeway) is float
    assert type(cfg.upstream["backend"].servers[1].fail_timeout) is float
    assert type(cfg.server[0].location[4].root) is str
    assert type(loc.limit.rate) is config.Rate  # keeps .count and .period


@pytest.mark.parametrize(("keys", "kept"), [
    ("", False),
    ("underscores_in_headers = true", True),
    ("ignore_invalid_headers = false", True),
    ("underscores_in_headers = false\nignore_invalid_headers = true", False),
])
def test_underscore_fields_are_kept_as_nginx_decides(keys, kept):
    """nginx: a name with "_" is invalid unless underscores_in_headers is on; an invalid name
    is dropped unless ignore_invalid_headers is off."""
    from edgeworker.phases import App

    cfg = loads(f"[http]\n{keys}\n" + server_with('match = "/"\nreturn = { status = 204 }'), CFG)
    assert App(cfg).underscores is kept


def test_underscore_keys_must_be_booleans():
    assert "http.underscores_in_headers" in one_error('[http]\nunderscores_in_headers = "yes"\n'
                                                       + MINIMAL)


def test_proxy_next_upstream_values_are_nginx_s():
    ok = loads(server_with('match = "/"\nproxy_pass = "http://127.0.0.1:9"\n'
                           'proxy_next_upstream = ["error", "http_503", "non_idempotent"]\n'
                           'proxy_next_upstream_tries = 2'), CFG)
    loc = ok.server[0].location[0]
    assert loc.proxy_next_upstream == ("error", "http_503", "non_idempotent")
    assert loc.proxy_next_upstream_tries == 2
    default = loads(server_with('match = "/"\nproxy_pass = "http://127.0.0.1:9"'), CFG)
    assert default.server[0].location[0].proxy_next_upstream == ("error", "timeout")
    assert default.server[0].location[0].proxy_next_upstream_timeout == 0
    timed = loads(server_with('match = "/"\nproxy_pass = "http://127.0.0.1:9"\n'
                              'proxy_next_upstream_timeout = "2s"'), CFG)
    assert timed.server[0].location[0].proxy_next_upstream_timeout == 2.0
    err = one_error(server_with('match = "/"\nproxy_pass = "http://127.0.0.1:9"\n'
                                'proxy_next_upstream = ["error", "http_418"]'))
    assert "server[0].location[0].proxy_next_upstream" in err and '"http_418"' in err
    err = one_error(server_with('match = "/"\nproxy_pass = "http://127.0.0.1:9"\n'
                                'proxy_next_upstream = ["off", "error"]'))
    assert '"off" cannot be combined' in err
    err = one_error(server_with('match = "/"\nproxy_pass = "http://127.0.0.1:9"\n'
                                'proxy_next_upstream_tries = -1'))
    assert "proxy_next_upstream_tries" in err


def test_proxy_redirect_values():
    loc = 'match = "/"\nproxy_pass = "http://127.0.0.1:9"\n'
    for value, expect in (('"off"', "off"), ('"default"', "default"),
                          ('[["http://a/", "/"], "default"]', (("http://a/", "/"), "default"))):
        cfg = loads(server_with(loc + f"proxy_redirect = {value}"), CFG)
        assert cfg.server[0].location[0].proxy_redirect == expect
    assert loads(server_with(loc), CFG).server[0].location[0].proxy_redirect == "default"
    assert 'invalid value "sometimes"' in one_error(server_with(loc + 'proxy_redirect = "sometimes"'))
    assert 'invalid value "off"' in one_error(server_with(loc + 'proxy_redirect = ["off"]'))
    assert "regular expressions" in one_error(
        server_with(loc + 'proxy_redirect = [["~^http://(.*)", "/"]]'))
    assert "is empty" in one_error(server_with(loc + 'proxy_redirect = [["", "/"]]'))
    err = one_error(server_with(loc + 'proxy_redirect = [["http://a/"]]'))
    assert "server[0].location[0].proxy_redirect" in err


def test_proxy_redirect_default_rules_follow_nginx():
    from edgeworker.proxy.build import redirect_rules

    # proxy_pass with a URI part in a prefix location: its URL → the location's prefix
    assert redirect_rules("default", "http://up:8080/two/", "/two/", "/one/") == (
        (b"http://up:8080/two/", "/one/"),)
    # without a URI part (or a regex location, which ignores it): scheme://authority/ → /
    assert redirect_rules("default", "http://backend", None, "/") == ((b"http://backend/", "/"),)
    assert redirect_rules("default", "http://up:8080/two/", None, None) == (
        (b"http://up:8080/", "/"),)
    assert redirect_rules("off", "http://backend", None, "/") == ()
    assert redirect_rules((("http://x/", "/y/"), "default"), "http://b", None, "/") == (
        (b"http://x/", "/y/"), (b"http://b/", "/"))
