"""The configuration: TOML decoded into typed msgspec Structs, validated, defaults applied.

``load(path)`` / ``loads(text, path)`` return a ``Config`` or raise
``edgeworker.errors.ConfigError(path, messages)``. Each message names the config path the way
users write it (``server[0].location[2].access: <cause>``); ``ConfigError.messages`` put the
file and line in front (``FILE:LINE: …``: ``Config.file`` is an
``edgeworker.confsource.SourceFile`` that knows the line of every key, so errors found later,
by ``check``, TLS or a worker, get theirs too). Before decoding, ``${NAME}`` and
``${NAME:-default}`` are expanded in every string value (``confsource.expand``). Decoding is
done table by table (main, http, each shared dict, redis, upstream…, each server, each
location), so one bad table does not hide the errors of the others; all semantic checks are
collected too.

This module holds the core: ``[main]``, ``[http]``, ``[shared_dict]``, ``[redis.NAME]``,
``[[server]]`` and the location skeleton (match, phase handlers, ``content``, ``return``,
``add_header``, ``client_max_body_size``). The declarative features come from the registry
``FEATURES``: one ``confschema.Feature`` each, defined in the feature's own module. A feature
brings its location keys (added to ``Location``), the check run on every decoded location, the
``"module:function"`` that builds its handler in a worker (``phases.LocationRuntime``), and its
top-level ``[KEY.NAME]`` tables (``Config.KEY``, a dict by NAME, decoded before the servers).
The registry order is the order of the checks and of the access features at run time. A new
declarative feature is one module defining its ``FEATURE`` plus one line in ``FEATURES``.
A feature's ``inherited`` keys (compression's ``gzip*``/``brotli*``) are also settable in
``[http]`` and ``[[server]]``: a location takes its own value, else its server's, else
``[http]``'s, else the feature's default (nginx's ``http``/``server``/``location``).

After loading, the Config is plain data with the unit conversions done:

- sizes are ``int`` bytes, durations ``float`` seconds, rates ``units.Rate`` (requests/second);
- handler fields are tuples of ``"module:function"`` strings; a location's phase handlers are its
  effective ones (its own, or inherited from ``[http]`` when it sets none);
- ``workers = "auto"`` is the CPU count; relative paths are absolute, relative to the folder of
  the config file;
- ``location.client_max_body_size`` is the effective value (falls back to ``[http]``).

Derived runtime data (compiled regexes, lookup tables) lives in ``edgeworker.routing``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import msgspec

from . import compress, static, status
from .confschema import (
    REDIS_TABLE,
    TOKEN_RE,
    Base,
    Context,
    Duration,
    Feature,
    Handlers,
    NonNegInt,
    PathStr,
    PosInt,
    Redis,
    ServerFeature,
    Size,
    StrList,
    Table,
    Workers,
    abspath,
    check_server_name,
    format_listen,
    inherit,
    parse_handler,
    parse_listen,
    parse_match,
    suggest,
)
from .confsource import expand, key_lines
from .errors import ConfigError
from .http.fields import ROUTING_FIELDS
from .http2 import schema as http2
from .lib import jwt_schema
from .lib.limit import declarative as limit
from .proxy import schema as proxy
from .tls import schema as tls
from .units import Rate, parse_size

__all__ = [
    "ACCESS_LOG_FORMATS",
    "FEATURES",
    "LOG_LEVELS",
    "PHASES",
    "SERVER_FEATURES",
    "Config",
    "Http",
    "Location",
    "Main",
    "Redis",
    "Rate",
    "Return",
    "Server",
    "default_pid_file",
    "format_listen",
    "load",
    "loads",
    "parse_handler",
    "parse_listen",
    "parse_match",
]

#: The declarative features (see the module docstring). Their checks run in this order, and so
#: do the access features (limit before jwt).
FEATURES: tuple[Feature, ...] = (
    proxy.FEATURE,
    status.FEATURE,
    limit.FEATURE,
    jwt_schema.FEATURE,
    static.FEATURE,
    compress.FEATURE,
)

#: The features that add keys to ``[[server]]`` (and ``[http]``, whose values servers inherit).
SERVER_FEATURES: tuple[ServerFeature, ...] = (tls.FEATURE, http2.FEATURE)
#: The location features' keys settable in ``[http]``, ``[[server]]`` and locations (the inner
#: one wins): (name, type, default) each (see ``Feature.inherited``).
INHERITED: tuple[tuple[str, Any, Any], ...] = tuple(k for f in FEATURES for k in f.inherited)
#: Each inherited key as a field of a scope: None while not set there.
_SCOPE_FIELDS = [(name, typ | None, None) for name, typ, _ in INHERITED]


#: Phase handler keys settable in ``[http]`` and inherited by locations, in run order.
PHASES: tuple[str, ...] = ("rewrite", "access", "header_filter", "body_filter", "log")

#: Accepted ``log_level`` values and their ``logging`` levels (nginx names, plus "warning").
LOG_LEVELS: dict[str, int] = {
    "debug": 10,
    "info": 20,
    "notice": 25,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "crit": 50,
}

ACCESS_LOG_FORMATS: tuple[str, ...] = ("combined", "json")
ERROR_LOG_FORMATS: tuple[str, ...] = ("nginx", "json")
REDIRECT_STATUSES: frozenset[int] = frozenset({301, 302, 303, 307, 308})

_LOG_SPECIAL = frozenset({"stderr"})
_ACCESS_SPECIAL = frozenset({"stdout", "off"})


class Main(Base):
    """``[main]``: process-wide settings.

    Keys:
        workers: worker processes; ``"auto"`` is the CPU count (nginx ``worker_processes``)
        worker_connections: concurrent connections per worker (nginx ``worker_connections``)
        pid_file: the pid file ``reload``, ``stop``, ``reopen`` and ``shm`` find the master
            through; not set: ``/run/edgeworker.pid`` when ``/run`` is writable, else
            ``$XDG_RUNTIME_DIR/edgeworker.pid``, else ``/tmp/edgeworker-<uid>.pid``
        error_log: ``"stderr"`` or a file path (nginx ``error_log``)
        log_level: ``debug``, ``info``, ``notice``, ``warn`` (or ``warning``), ``error``,
            ``crit``
        error_log_format: ``"nginx"`` (nginx's line format) or ``"json"`` (one object per line)
        python_path: import roots for handler modules, searched before the rest of
            ``sys.path`` (nginx ``lua_package_path``)
        init: handler run in the master before the workers are forked, and again on every
            reload (``init_by_lua``)
        init_worker: handler run in each worker after the fork, before it accepts
            (``init_worker_by_lua``)
        exit_worker: handler run in each worker at graceful exit, after its timers fired
            (``exit_worker_by_lua``)
        code_cache: ``false`` re-imports the handler modules for each request (nginx
            ``lua_code_cache off``; development only)
        graceful_timeout: how long a graceful stop or reload waits for in-flight requests and
            timers (nginx ``worker_shutdown_timeout``)
        max_pending_timers: timers a worker may have pending (``lua_max_pending_timers``)
        max_running_timers: timer callbacks a worker runs at once; more wait for a slot
            (``lua_max_running_timers``)
        metrics: keep the counters the status locations show (``false``: none, no cost)
        status_zone_size: size of the shared-memory zone of those counters (at least
            ``64k``; changed only by a restart)
    """

    workers: Workers = Workers(2)
    worker_connections: PosInt = 1024
    #: None = not set: see ``default_pid_file()``.
    pid_file: PathStr | None = None
    #: "stderr" or an absolute path.
    error_log: str = "stderr"
    log_level: str = "info"
    #: "nginx" (nginx's line format) or "json" (one object per line).
    error_log_format: str = "nginx"
    python_path: StrList = StrList(("handlers",))
    init: Handlers = Handlers()
    init_worker: Handlers = Handlers()
    exit_worker: Handlers = Handlers()
    code_cache: bool = True
    graceful_timeout: Duration = Duration(30.0)
    max_pending_timers: PosInt = 1024
    max_running_timers: PosInt = 256
    #: Count requests, connections... into the status zone (``status`` locations show them).
    metrics: bool = True
    #: Size of the internal shared-memory zone of the metrics (fixed at start: not reloaded).
    status_zone_size: Size = Size(1024 * 1024)


class _HttpCore(Base):
    """``[http]``: protocol limits, timeouts, logs, and the phase handlers locations inherit.

    Keys:
        access_log: a file path, ``"stdout"`` or ``"off"`` (nginx ``access_log``)
        access_log_format: ``"combined"``, ``"json"`` (one object per line) or a format of
            ``$variables`` (nginx ``log_format``)
        request_id_header: a valid incoming value of this field becomes ``$request_id``, and
            the id is sent back in it; ``""`` turns it off
        keepalive_timeout: how long an idle keep-alive connection stays open (nginx
            ``keepalive_timeout``)
        keepalive_requests: requests served on one connection before it is closed (nginx
            ``keepalive_requests``)
        client_header_timeout: deadline for the whole request head: 408 after it (nginx
            ``client_header_timeout``)
        client_body_timeout: longest wait between two reads of the request body: 408 after it
            (nginx ``client_body_timeout``)
        send_timeout: longest wait between two writes to the client (nginx ``send_timeout``)
        client_max_body_size: the largest request body: 413 above it; a location may set its
            own (nginx ``client_max_body_size``)
        max_request_line: the longest request line: 414 above it (nginx
            ``large_client_header_buffers``)
        max_header_size: the largest header section: 431 above it (nginx
            ``large_client_header_buffers``)
        max_headers: the most header fields in a request: 431 above it
        underscores_in_headers: keep request fields whose name holds ``_`` (nginx
            ``underscores_in_headers``)
        ignore_invalid_headers: with ``underscores_in_headers`` off, drop (on) or keep (off)
            the fields named with ``_``; other invalid names are always 400 (nginx
            ``ignore_invalid_headers``)
        rewrite: rewrite-phase handlers of every location that sets none of its own
        access: access-phase handlers of every location that sets none of its own
        header_filter: header_filter handlers of every location that sets none of its own
        body_filter: body_filter handlers of every location that sets none of its own
        log: log-phase handlers of every location that sets none of its own
    """

    #: "stdout", "off", or an absolute path.
    access_log: str = "stdout"
    #: "combined", "json", or a custom format with ``$variables``.
    access_log_format: str = "combined"
    #: Incoming header honoured as ``$request_id`` and sent back in the response ("" = off).
    request_id_header: str = "X-Request-Id"
    keepalive_timeout: Duration = Duration(75.0)
    keepalive_requests: NonNegInt = 1000
    client_header_timeout: Duration = Duration(60.0)
    client_body_timeout: Duration = Duration(60.0)
    send_timeout: Duration = Duration(60.0)
    client_max_body_size: Size = Size(1024 * 1024)
    max_request_line: Size = Size(8 * 1024)
    max_header_size: Size = Size(8 * 1024)
    max_headers: PosInt = 100
    #: nginx ``underscores_in_headers``: keep request fields whose name holds "_".
    underscores_in_headers: bool = False
    #: nginx ``ignore_invalid_headers``: with underscores off, such fields are dropped (on) or
    #: kept (off). Names that are not tokens are always refused (400).
    ignore_invalid_headers: bool = True
    rewrite: Handlers = Handlers()
    access: Handlers = Handlers()
    header_filter: Handlers = Handlers()
    body_filter: Handlers = Handlers()
    log: Handlers = Handlers()


Http = msgspec.defstruct(
    "Http",
    [*(field for f in SERVER_FEATURES for field in f.fields), *_SCOPE_FIELDS],
    bases=(_HttpCore,),
    module=__name__,
    namespace={
        "__doc__": "``[http]``: protocol limits, timeouts, logs, the phase handlers locations "
        "inherit, the server features' keys servers inherit (``ssl_*``), and the location "
        "features' inherited keys (``INHERITED``; None when not set)."
    },
)


#: The ``[KEY.NAME]`` tables: redis, then the features'; ``Config.KEY`` is a dict by NAME.
_TABLES: tuple[Table, ...] = (
    REDIS_TABLE,
    *(t for f in FEATURES for t in f.tables),
)


class Return(Base):
    """``return = { status = 301, location = "…" }`` or ``{ status = 200, body = "ok" }``.

    Keys:
        status: the status, 100 to 599 (nginx ``return CODE``)
        location: the ``Location`` of a redirect (301, 302, 303, 307, 308 need one, other
            statuses take none); ``$variables`` are expanded
        body: the body of a status that is not a redirect; ``$variables`` are expanded
    """

    status: int
    location: str | None = None
    body: str | None = None


#: The location keys of the core; the features' keys follow (``FEATURES``).
_LOCATION_FIELDS: list[tuple[str, Any, Any]] = [
    ("match", str, msgspec.NODEFAULT),
    ("rewrite", Handlers | None, None),
    ("access", Handlers | None, None),
    ("content", str | None, None),
    ("return_", Return | None, msgspec.field(default=None, name="return")),
    ("header_filter", Handlers | None, None),
    ("body_filter", Handlers | None, None),
    ("log", Handlers | None, None),
    ("default_type", str, "text/plain"),
    ("add_header", dict[str, str], {}),
    ("client_max_body_size", Size | None, None),
    # set by the loader: "server[0].location[2]" (not a config key)
    ("path", str, msgspec.field(default="", name="__path__")),
]

Location = msgspec.defstruct(
    "Location",
    _LOCATION_FIELDS + [field for f in FEATURES for field in f.fields] + _SCOPE_FIELDS,
    bases=(Base,),
    module=__name__,
    namespace={
        "__doc__": """``[[server.location]]``: the core keys and every feature's.

    Keys:
        match: ``"/prefix"``, ``"= /exact"``, ``"^~ /prefix"``, ``"~ regex"`` or
            ``"~* regex"``, chosen by nginx's precedence (nginx ``location``)
        rewrite: rewrite-phase handlers; may change the URI (``rewrite_by_lua``)
        access: access-phase handlers, after ``limit`` and ``jwt`` (``access_by_lua``)
        content: the Python content handler, ``"module:function"`` (``content_by_lua``)
        return: a fixed answer: ``{ status, location }`` or ``{ status, body }`` (nginx
            ``return``)
        header_filter: handlers run once before the response head goes out
            (``header_filter_by_lua``)
        body_filter: handlers run on each piece of the body, ``fn(req, chunk, eof)``
            (``body_filter_by_lua``)
        log: handlers run after the response was sent (``log_by_lua``)
        default_type: the ``Content-Type`` of a response that sets none (nginx
            ``default_type``)
        add_header: response fields to add, values with ``$variables`` (nginx ``add_header``,
            on 200, 201, 204, 206, 301, 302, 303, 304, 307, 308)
        client_max_body_size: this location's largest request body; ``[http]``'s when not set
    """
    },
)

#: The keys of which a location has exactly one: what makes its response.
_SOURCES = tuple(sorted(("content", "return", *(f.key for f in FEATURES if f.content))))


class _ServerCore(Base):
    """``[[server]]``: the addresses and names a virtual server answers, and its locations.

    Keys:
        listen: ``"IP:PORT"``, ``"[IPv6]:PORT"``, ``":PORT"``, ``"PORT"`` or
            ``"localhost:PORT"``, one or a list; the flag ``ssl`` after an address serves TLS
            there (nginx ``listen``)
        server_name: the names this server answers, one or a list: exact,
            ``*.example.com``, ``www.example.*`` or ``~regex`` (nginx ``server_name``)
        location: the ``[[server.location]]`` tables, in file order
    """

    listen: StrList = StrList(("127.0.0.1:8080",))
    server_name: StrList = StrList(("",))
    location: tuple[Location, ...] = ()
    #: Set by the loader: "server[0]" (not a config key).
    path: str = msgspec.field(default="", name="__path__")
    #: Set by the loader: the ``listen`` addresses flagged ``ssl`` (normalized as ``listen``).
    listen_ssl: tuple[str, ...] = msgspec.field(default=(), name="__listen_ssl__")
    #: Set by the loader: the ``listen`` addresses that serve HTTP/2 (``http2``).
    listen_http2: tuple[str, ...] = msgspec.field(default=(), name="__listen_http2__")


Server = msgspec.defstruct(
    "Server",
    [*(field for f in SERVER_FEATURES for field in f.server_fields), *_SCOPE_FIELDS],
    bases=(_ServerCore,),
    module=__name__,
    namespace={
        "__doc__": "``[[server]]``: a virtual server. ``listen`` is normalized "
        '(``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``"0.0.0.0:8080"`` for a bare port), its '
        "flags (``ssl``, ``http2``) taken off into ``listen_ssl`` and ``listen_http2``; the first server for an address is its "
        "default. The server features' keys (``ssl_*``) hold their effective values; it may "
        "set the location features' inherited keys."
    },
)


Config = msgspec.defstruct(
    "Config",
    [
        ("main", Main),
        ("http", Http),
        ("shared_dict", dict[str, int]),
        *((t.key, dict[str, t.schema]) for t in _TABLES),
        ("server", tuple[Server, ...]),
        ("file", str),
    ],
    bases=(Base,),
    module=__name__,
    namespace={
        "__doc__": """The whole configuration. ``file`` is the absolute path of the config file
    (a ``SourceFile``: it knows the line of each key); ``redis`` and each feature table
    (``upstream``) are dicts by name.

    Keys:
        main: process-wide settings
        http: protocol limits, timeouts, logs; defaults every server and location inherits
        shared_dict: ``NAME = size``: the shared-memory zones, ``edgeworker.shared["NAME"]``
            (nginx ``lua_shared_dict``); a name is letters, digits, ``_`` and ``-``, not
            starting with a digit; at least ``16k``
        redis: ``[redis.NAME]``: named Redis connections for handlers and limits
        upstream: ``[upstream.NAME]``: balanced groups of servers for ``proxy_pass`` (nginx
            ``upstream``)
        server: ``[[server]]``: the virtual servers, in file order (nginx ``server``)
    """,
        "directory": property(
            lambda self: os.path.dirname(self.file),
            doc="The folder relative paths were resolved against.",
        ),
        "listen_addresses": lambda self: listen_addresses(self.server),
    },
)


def listen_addresses(servers: tuple[Server, ...]) -> list[tuple[str, int]]:
    """The (host, port) pairs the servers' ``listen`` keys bind, in order, without duplicates.

    A specific address whose port is also listened on by a wildcard of the same family
    (``0.0.0.0`` or ``::``) is left out: the wildcard socket receives its connections, and the
    router still tells them apart by the connection's local address (as nginx).
    """
    addrs = dict.fromkeys(parse_listen(t) for server in servers for t in server.listen)
    return [
        (h, p)
        for h, p in addrs
        if h in ("0.0.0.0", "::") or ("::" if ":" in h else "0.0.0.0", p) not in addrs
    ]


_DICT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def default_pid_file() -> str:
    """Where the pid file goes when ``main.pid_file`` is not set.

    ``/run/edgeworker.pid`` when /run is writable (root, systemd), else
    ``$XDG_RUNTIME_DIR/edgeworker.pid`` when that variable names a directory, else
    ``/tmp/edgeworker-<uid>.pid``.
    """
    if os.path.isdir("/run") and os.access("/run", os.W_OK):
        return "/run/edgeworker.pid"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "edgeworker.pid")
    return f"/tmp/edgeworker-{os.getuid()}.pid"


_SYNTAX_RE = re.compile(r"^(.*) \(at (?:line (\d+), column (\d+)|end of document)\)$", re.S)


def _syntax_error(file: str, text: str, e: tomllib.TOMLDecodeError) -> ConfigError:
    """tomllib's error as ``FILE:LINE:COLUMN: TOML syntax error: cause``."""
    m = _SYNTAX_RE.match(str(e))
    if m is None:
        return ConfigError(file, [f"TOML syntax error: {e}"])
    if m.group(2):
        place = f"{file}:{m.group(2)}:{m.group(3)}"
    else:  # at the end of the document: its last line
        place = f"{file}:{text.count(chr(10)) + (not text.endswith(chr(10)))}"
    return ConfigError(file, [f"TOML syntax error: {m.group(1)}"], [place])


class _Loader(Context):
    def run(self, text: str, env: Mapping[str, str]) -> Any:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise _syntax_error(self.file, text, e) from None
        self.file.lines.update(key_lines(text))
        raw = expand(raw, env, self.err, self.expanded)
        if self.errors:  # an unset variable: the values would only add confusing errors
            raise ConfigError(self.file, self.errors)
        top = ("main", "http", "shared_dict", *(t.key for t in _TABLES), "server")
        for key in raw:
            if key not in top:
                hint = suggest(key, top) or f" (top level takes {', '.join(top)})"
                self.err(key, f'unknown key "{key}"{hint}')

        main = self.convert(self.table(raw, "main") or {}, Main, "main") or Main()
        http = self.convert(self.table(raw, "http") or {}, Http, "http") or Http()
        self.post_main(main)
        self.post_http(http)

        for name, value in (self.table(raw, "shared_dict") or {}).items():
            p = f"shared_dict.{name}"
            if not _DICT_NAME_RE.match(name):
                self.err(
                    p, "a shared dict name is letters, digits, _ and -, not starting with a digit"
                )
            try:
                size = parse_size(value)
            except ValueError as e:
                self.err(p, str(e))
                continue
            if size < 16384:
                self.err(p, f"size {size} is too small (minimum 16k)")
            self.shared[name] = size

        for t in _TABLES:
            self.decode_table(raw, t)

        servers = self.servers(raw.get("server"), http)
        fields = dict(self.tables, main=main, http=http, shared_dict=self.shared, file=self.file)
        cfg = Config(server=tuple(servers), **fields)
        if self.errors:
            raise ConfigError(self.file, self.errors)
        return cfg

    def post_main(self, main: Main) -> None:
        if main.log_level not in LOG_LEVELS:
            self.err(
                "main.log_level",
                f'invalid level "{main.log_level}": expected one of '
                + ", ".join(LOG_LEVELS)
                + suggest(main.log_level, LOG_LEVELS),
            )
        if main.error_log_format not in ERROR_LOG_FORMATS:
            self.err(
                "main.error_log_format",
                f'invalid format "{main.error_log_format}": expected "nginx" or "json"',
            )
        if main.error_log not in _LOG_SPECIAL:
            main.error_log = abspath(self.base, main.error_log)
        main.python_path = tuple(abspath(self.base, p) for p in main.python_path)
        for key in ("init", "init_worker", "exit_worker"):
            self.check_handlers(f"main.{key}", getattr(main, key))
        if main.status_zone_size < 64 * 1024:
            self.err(
                "main.status_zone_size",
                f"too small ({int(main.status_zone_size)} bytes): at least 64k",
            )

    def post_http(self, http: Http) -> None:
        if http.access_log_format not in ACCESS_LOG_FORMATS and "$" not in http.access_log_format:
            self.err(
                "http.access_log_format",
                f'invalid format "{http.access_log_format}": expected "combined", "json" '
                "or a format with $variables" + suggest(http.access_log_format, ACCESS_LOG_FORMATS),
            )
        if http.request_id_header and not TOKEN_RE.match(http.request_id_header):
            self.err("http.request_id_header", f'invalid header name "{http.request_id_header}"')
        elif http.request_id_header.lower() in ROUTING_FIELDS:
            self.err(
                "http.request_id_header",
                f'"{http.request_id_header}" frames or routes the request; '
                "choose another header name",
            )
        if http.access_log not in _ACCESS_SPECIAL:
            http.access_log = abspath(self.base, http.access_log)
        for key in PHASES:
            self.check_handlers(f"http.{key}", getattr(http, key))
        self.check_scope(http, "http")

    def check_scope(self, scope: Any, path: str) -> None:
        """The features' checks of the inherited keys ``scope`` sets itself."""
        for feature in FEATURES:
            if feature.scope_check is not None:
                feature.scope_check(scope, path, self)

    def servers(self, raw_servers: Any, http: Http) -> list[Server]:
        if raw_servers is None:
            self.err("server", "at least one [[server]] is required")
            return []
        if not isinstance(raw_servers, list) or not all(isinstance(s, dict) for s in raw_servers):
            self.err("server", "expected an array of tables ([[server]])")
            return []
        if not raw_servers:
            self.err("server", "at least one [[server]] is required")
        out: list[Server] = []
        seen_names: dict[tuple[str, str], str] = {}
        for i, raw in enumerate(raw_servers):
            sp = f"server[{i}]"
            raw = dict(raw)
            raw_locs = raw.pop("location", [])
            server = self.convert(raw, Server, sp)
            if server is None:  # still report the problems of its locations
                self.locations(raw_locs, sp, http, None)
                continue
            server.path = sp
            self.check_scope(server, sp)
            listens: list[str] = []
            flagged: dict[str, tuple[str, ...]] = {}
            for j, text in enumerate(server.listen):
                address, *words = text.split() or [text]
                try:
                    norm = format_listen(*parse_listen(address))
                except ValueError as e:
                    self.err(f"{sp}.listen[{j}]", str(e))
                    continue
                flags, problem = _listen_flags(words)
                if problem:
                    self.err(f"{sp}.listen[{j}]", problem)
                listens.append(norm)
                flagged[norm] = flagged.get(norm, ()) + flags
            if not server.listen:
                self.err(f"{sp}.listen", "at least one address is required")
            server.listen = tuple(dict.fromkeys(listens))
            server.listen_ssl = tuple(a for a in server.listen if "ssl" in flagged[a])
            server.listen_http2 = tuple(a for a in server.listen if "http2" in flagged[a])
            names: list[str] = []
            for j, name in enumerate(server.server_name):
                try:
                    names.append(check_server_name(name))
                except ValueError as e:
                    self.err(f"{sp}.server_name[{j}]", str(e))
            server.server_name = tuple(dict.fromkeys(names))
            for addr in server.listen:
                for name in server.server_name:
                    other = seen_names.setdefault((addr, name), sp)
                    if other != sp:
                        self.err(
                            f"{sp}.server_name",
                            f'conflicting server name "{name}" on {addr} (also in {other})',
                        )
            server.location = tuple(self.locations(raw_locs, sp, http, server))
            out.append(server)
        for feature in SERVER_FEATURES:
            feature.check(out, http, self)
        return out

    def locations(self, raw_locs: Any, sp: str, http: Http, server: Server | None) -> list[Any]:
        if not isinstance(raw_locs, list) or not all(isinstance(x, dict) for x in raw_locs):
            self.err(f"{sp}.location", "expected an array of tables ([[server.location]])")
            return []
        out: list[Any] = []
        seen: dict[tuple[str, str], str] = {}
        for j, raw in enumerate(raw_locs):
            lp = f"{sp}.location[{j}]"
            loc = self.convert(raw, Location, lp)
            if loc is None:
                continue
            loc.path = lp
            self.post_location(loc, lp, http, server)
            try:
                modifier, pattern = parse_match(loc.match)
            except ValueError as e:
                self.err(f"{lp}.match", str(e))
            else:
                kind = "prefix" if modifier in ("", "^~") else modifier
                other = seen.setdefault((kind, pattern), lp)
                if other != lp:
                    self.err(f"{lp}.match", f'duplicate location "{loc.match}" (also {other})')
            out.append(loc)
        return out

    def post_location(self, loc: Any, lp: str, http: Http, server: Server | None) -> None:
        kinds = [k for k in _SOURCES if getattr(loc, "return_" if k == "return" else k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            self.err(lp, f"exactly one of {', '.join(_SOURCES)} is required (found: {found})")
        for key in ("rewrite", "access", "content", "header_filter", "body_filter", "log"):
            own = getattr(loc, key)
            if key == "content":
                if own is not None:
                    self.check_handlers(f"{lp}.content", (own,))
            elif own is None:
                setattr(loc, key, getattr(http, key))
            else:
                self.check_handlers(f"{lp}.{key}", own)
        if loc.client_max_body_size is None:
            loc.client_max_body_size = http.client_max_body_size
        if loc.return_ is not None:
            self.check_return(loc.return_, f"{lp}.return")
        self.check_header_names(f"{lp}.add_header", loc.add_header)
        self.check_scope(loc, lp)
        inherit(loc, INHERITED, server, http)  # not set here: the server's, else [http]'s
        for feature in FEATURES:
            feature.check(loc, lp, self)

    def check_return(self, r: Return, path: str) -> None:
        if not 100 <= r.status <= 599:
            self.err(f"{path}.status", f"invalid status {r.status}: must be 100-599")
        if r.status in REDIRECT_STATUSES:
            if not r.location:
                self.err(path, f"status {r.status} is a redirect and needs a location")
            if r.body is not None:
                self.err(f"{path}.body", "a redirect takes a location, not a body")
        elif r.location is not None:
            self.err(
                f"{path}.location",
                f"location is only used with 301, 302, 303, 307, 308 (status is {r.status})",
            )


def _listen_flags(words: list[str]) -> tuple[tuple[str, ...], str | None]:
    """The flags after a listen address (the server features'), or ((), the error)."""
    known = [flag for f in SERVER_FEATURES for flag in f.listen_flags]
    for word in words:
        if word not in known:
            hint = suggest(word, known) or f" (known: {', '.join(known)})"
            return (), f'unknown listen flag "{word}"{hint}'
    return tuple(words), None


def loads(text: str, path: str, env: Mapping[str, str] | None = None) -> Config:
    """Decode and validate a config given as text; ``path`` is where it came from (relative
    paths inside are resolved against its folder). ``${NAME}`` in string values is taken from
    ``env`` (default: this process's environment). Raises ``ConfigError(path, messages)``."""
    return _Loader(path).run(text, os.environ if env is None else env)


def load(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read, decode and validate the config file at ``path`` (``env`` as ``loads``).

    Raises ``ConfigError(path, messages)`` when it cannot be read or is invalid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(os.path.abspath(path), [f"cannot read: {e}"]) from None
    return loads(text, path, env)
