"""The configuration: TOML decoded into typed msgspec Structs, validated, defaults applied.

``load(path)`` / ``loads(text, path)`` return a ``Config`` or raise
``edgeworker.errors.ConfigError(path, messages)``. Each message names the config path the way
users write it (``server[0].location[2].access: <cause>``). Decoding is done table by table
(main, http, each shared dict, each redis, each upstream, each server, each location), so one
bad table does not hide the errors of the others; all semantic checks are collected too.

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

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from .errors import ConfigError
from .http.fields import ROUTING_FIELDS
from .units import Rate, parse_duration, parse_rate, parse_size

__all__ = [
    "ACCESS_LOG_FORMATS",
    "LOG_LEVELS",
    "PHASES",
    "Config",
    "Http",
    "Jwt",
    "Limit",
    "Location",
    "Main",
    "Redis",
    "Rate",
    "Return",
    "Server",
    "Upstream",
    "UpstreamServer",
    "default_pid_file",
    "load",
    "loads",
    "parse_handler",
    "parse_listen",
    "parse_match",
    "parse_proxy_pass",
    "proxy_pass_tls",
]

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
STATUS_KINDS: tuple[str, ...] = ("json", "prometheus", "dashboard")
REDIRECT_STATUSES: frozenset[int] = frozenset({301, 302, 303, 307, 308})
BALANCE_METHODS: tuple[str, ...] = ("round_robin", "least_conn", "ip_hash", "hash", "random")
JWT_HMAC = frozenset({"HS256", "HS384", "HS512"})
JWT_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512",
     "EdDSA"}
)

# ---------------------------------------------------------------------------------------------
# Value types converted by the decode hook (subclasses of the plain type they become).


class Size(int):
    """Bytes; decoded from ``"512k"``-style strings or integers."""


class Duration(float):
    """Seconds; decoded from numbers or ``"30s"``-style strings."""


class Workers(int):
    """Worker count; ``"auto"`` decodes to the CPU count."""


class Handlers(tuple):
    """A tuple of ``"module:function"`` strings; decoded from one string or a list."""


class PathStr(str):
    """A filesystem path; made absolute against the config file's folder."""


class StrList(tuple):
    """A tuple of strings; decoded from one string or a list."""


_LOG_SPECIAL = frozenset({"stderr"})
_ACCESS_SPECIAL = frozenset({"stdout", "off"})


def _make_dec_hook(base: str) -> Callable[[type, Any], Any]:
    def dec_hook(typ: type, obj: Any) -> Any:
        if typ is Size:
            return Size(parse_size(obj))
        if typ is Duration:
            return Duration(parse_duration(obj))
        if typ is Rate:
            return parse_rate(obj)
        if typ is Workers:
            if obj == "auto":
                return Workers(os.cpu_count() or 1)
            if isinstance(obj, int) and not isinstance(obj, bool) and obj >= 1:
                return Workers(obj)
            raise ValueError(f'invalid workers {obj!r}: expected an integer >= 1 or "auto"')
        if typ is Handlers or typ is StrList:
            items = [obj] if isinstance(obj, str) else obj
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError(f"expected a string or a list of strings, got {obj!r}")
            return typ(items)
        if typ is PathStr:
            if not isinstance(obj, str) or not obj:
                raise ValueError(f"expected a non-empty path string, got {obj!r}")
            return PathStr(_abspath(base, obj))
        raise NotImplementedError(typ)

    return dec_hook


_PLAIN: dict[type, type] = {Size: int, Duration: float, Workers: int, PathStr: str}


def _plain(obj: Any) -> Any:
    """Replace the decode-time marker types by the builtins they stand for, in place for
    Structs (``Rate`` stays: it carries the count and period)."""
    if isinstance(obj, msgspec.Struct):
        for name in obj.__struct_fields__:
            setattr(obj, name, _plain(getattr(obj, name)))
        return obj
    base = _PLAIN.get(type(obj))
    if base is not None:
        return base(obj)
    if isinstance(obj, tuple):
        return tuple(_plain(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _abspath(base: str, path: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]

# ---------------------------------------------------------------------------------------------
# The schema (SPEC §2). Defaults are SPEC's.


class Main(_Base):
    """``[main]``: process-wide settings."""

    workers: Workers = Workers(2)
    worker_connections: PosInt = 1024
    #: None = not set: see ``default_pid_file()``.
    pid_file: PathStr | None = None
    #: "stderr" or an absolute path.
    error_log: str = "stderr"
    log_level: str = "info"
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


class Http(_Base):
    """``[http]``: protocol limits, timeouts, logs, and the phase handlers locations inherit."""

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


class Redis(_Base):
    """``[redis.NAME]``: a named Redis connection (per-worker pool)."""

    url: str = "redis://127.0.0.1:6379/0"
    connect_timeout: Duration = Duration(0.1)
    timeout: Duration = Duration(0.1)
    pool_size: PosInt = 100
    name: str = msgspec.field(default="", name="__name__")


class UpstreamServer(_Base):
    """One peer of an upstream (nginx ``server`` in ``upstream``)."""

    address: str
    weight: PosInt = 1
    max_fails: NonNegInt = 1
    fail_timeout: Duration = Duration(10.0)
    backup: bool = False
    #: nginx ``max_conns``: at most this many requests in flight to the server, per worker
    #: (0: no limit)
    max_conns: NonNegInt = 0


class Upstream(_Base):
    """``[upstream.NAME]``: a balanced group of peers. ``servers`` items are all
    ``UpstreamServer`` after loading (a plain string is an address with the defaults)."""

    servers: tuple[UpstreamServer | str, ...]
    balance: str = "round_robin"
    #: the key of ``balance = "hash"`` (nginx ``hash KEY``): text with ``$variables``
    hash: str = ""
    #: ``balance = "hash"``: ketama consistent hashing (nginx ``hash KEY consistent``)
    consistent: bool = False
    #: ``balance = "random"``: pick two servers at random, send to the less busy one (nginx
    #: ``random two least_conn``)
    two: bool = False
    keepalive: NonNegInt = 32
    connect_timeout: Duration = Duration(5.0)
    read_timeout: Duration = Duration(60.0)
    send_timeout: Duration = Duration(60.0)
    name: str = msgspec.field(default="", name="__name__")

    def __post_init__(self) -> None:
        self.servers = tuple(
            UpstreamServer(address=s) if isinstance(s, str) else s for s in self.servers
        )


class Return(_Base):
    """``return = { status = 301, location = "…" }`` or ``{ status = 200, body = "ok" }``."""

    status: int
    location: str | None = None
    body: str | None = None


class Limit(_Base):
    """``limit = { … }``: declarative rate limit, run first in the access phase."""

    rate: Rate
    store: str
    key: str = "$binary_remote_addr"
    burst: NonNegInt = 0
    fail: str = "open"
    status: int = 429


class Jwt(_Base):
    """``jwt = { … }``: bearer-token validation, run in the access phase after ``limit``.

    Key sources (``secret``, ``public_key``) may be literal, ``env:NAME`` or ``file:PATH``
    (a relative PATH is made absolute against the config folder).
    """

    algorithms: tuple[str, ...]
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: StrList | None = None
    leeway: Duration = Duration(0.0)
    claims_to_headers: dict[str, str] = {}
    realm: str = "edgeworker"


class Location(_Base):
    """``[[server.location]]``. After loading, the phase handler tuples and
    ``client_max_body_size`` are the effective values (inherited from ``[http]`` when unset)."""

    match: str
    rewrite: Handlers | None = None
    access: Handlers | None = None
    content: str | None = None
    proxy_pass: str | None = None
    return_: Return | None = msgspec.field(default=None, name="return")
    root: PathStr | None = None
    index: StrList = StrList(("index.html",))
    status: str | None = None
    limit: Limit | None = None
    jwt: Jwt | None = None
    header_filter: Handlers | None = None
    body_filter: Handlers | None = None
    log: Handlers | None = None
    default_type: str = "text/plain"
    add_header: dict[str, str] = {}
    proxy_set_header: dict[str, str] = {}
    #: nginx ``proxy_redirect``: "default", "off", or a list of "default" and
    #: ``[redirect, replacement]`` pairs rewriting the upstream's ``Location``/``Refresh``.
    proxy_redirect: str | tuple[str | tuple[str, str], ...] = "default"
    #: ``https://`` proxy_pass: verify the upstream's certificate (nginx ``proxy_ssl_verify``,
    #: whose default is off: edgeworker verifies unless told not to).
    proxy_ssl_verify: bool = True
    #: ``https://`` proxy_pass: the name sent (SNI) and verified (nginx ``proxy_ssl_name``);
    #: "" means each server's own host name.
    proxy_ssl_name: str = ""
    #: ``https://`` proxy_pass: PEM file of the CAs to trust instead of the system's (nginx
    #: ``proxy_ssl_trusted_certificate``).
    proxy_ssl_trusted_certificate: PathStr | None = None
    #: ``https://`` proxy_pass: the client certificate (PEM) shown to the upstream, and its
    #: key (nginx ``proxy_ssl_certificate``, ``proxy_ssl_certificate_key``): mutual TLS.
    proxy_ssl_certificate: PathStr | None = None
    proxy_ssl_certificate_key: PathStr | None = None
    #: nginx ``proxy_next_upstream``: the failures after which the next server is tried.
    proxy_next_upstream: StrList = StrList(("error", "timeout"))
    #: nginx ``proxy_next_upstream_tries``: at most this many attempts (0: one per server).
    proxy_next_upstream_tries: NonNegInt = 0
    #: nginx ``proxy_next_upstream_timeout``: no new attempt once this long has passed since
    #: the first one began (0: no limit).
    proxy_next_upstream_timeout: Duration = Duration(0.0)
    client_max_body_size: Size | None = None
    #: Set by the loader: "server[0].location[2]" (not a config key).
    path: str = msgspec.field(default="", name="__path__")


class Server(_Base):
    """``[[server]]``: a virtual server. ``listen`` is normalized (``"127.0.0.1:8080"``,
    ``"[::1]:8080"``, ``"0.0.0.0:8080"`` for a bare port); the first server for an address
    is its default."""

    listen: StrList = StrList(("127.0.0.1:8080",))
    server_name: StrList = StrList(("",))
    location: tuple[Location, ...] = ()
    #: Set by the loader: "server[0]" (not a config key).
    path: str = msgspec.field(default="", name="__path__")


class Config(_Base):
    """The whole configuration. ``file`` is the absolute path of the config file."""

    main: Main
    http: Http
    shared_dict: dict[str, int]
    redis: dict[str, Redis]
    upstream: dict[str, Upstream]
    server: tuple[Server, ...]
    file: str

    @property
    def directory(self) -> str:
        """The folder relative paths were resolved against."""
        return os.path.dirname(self.file)

    def listen_addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs to bind, in config order, without duplicates.

        A specific address whose port is also listened on by a wildcard of the same family
        (``0.0.0.0`` or ``::``) is left out: the wildcard socket receives its connections, and
        the router still tells them apart by the connection's local address (as nginx).
        """
        addrs = dict.fromkeys(parse_listen(t) for server in self.server for t in server.listen)
        out: list[tuple[str, int]] = []
        for host, port in addrs:
            if host not in ("0.0.0.0", "::"):
                wildcard = "::" if ":" in host else "0.0.0.0"
                if (wildcard, port) in addrs:
                    continue
            out.append((host, port))
        return out


_RESERVED = "__path__", "__name__"

# ---------------------------------------------------------------------------------------------
# Syntax helpers shared with routing and the rest of the server.

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER_RE = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")
_MATCH_RE = re.compile(r"^(=|\^~|~\*|~)\s*(.*)$", re.S)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DICT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def parse_handler(spec: str) -> tuple[str, str]:
    """Split ``"module:function"`` into (module, attribute path); ``ValueError`` if malformed.

    The module is a dotted module name; the function may be a dotted attribute path
    (``"app:Auth.check"``).
    """
    m = _HANDLER_RE.match(spec)
    if m is None:
        raise ValueError(f'invalid handler "{spec}": expected "module:function"')
    return m.group(1), m.group(2)


def parse_match(match: str) -> tuple[str, str]:
    """Split a location ``match`` into (modifier, pattern).

    Modifier is ``""`` (prefix), ``"="`` (exact), ``"^~"`` (prefix that stops the regex
    search), ``"~"`` (regex) or ``"~*"`` (case-insensitive regex). ``ValueError`` if the
    pattern is empty, a prefix or exact pattern does not start with ``/``, or a regex
    does not compile.
    """
    m = _MATCH_RE.match(match)
    modifier, pattern = (m.group(1), m.group(2)) if m else ("", match)
    if not pattern:
        raise ValueError(f'invalid match "{match}": empty pattern')
    if modifier in ("", "=", "^~"):
        if not pattern.startswith("/"):
            raise ValueError(
                f'invalid match "{match}": a prefix or exact match must start with "/" '
                '(use "~ regex" or "~* regex" for regular expressions)'
            )
        if any(c.isspace() for c in pattern):
            raise ValueError(f'invalid match "{match}": whitespace in the URI')
    else:
        try:
            re.compile(pattern, re.IGNORECASE if modifier == "~*" else 0)
        except re.error as e:
            raise ValueError(f'invalid regex "{pattern}": {e}') from None
    return modifier, pattern


def parse_listen(listen: str) -> tuple[str, int]:
    """Parse a listen address into (host, port).

    Accepts ``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``"localhost:8080"`` (= 127.0.0.1),
    and the wildcard forms ``":8080"``, ``"*:8080"``, ``"8080"`` (= ``0.0.0.0``, all IPv4
    addresses, as nginx). ``"[::]:8080"`` is the IPv6 wildcard. ``ValueError`` otherwise.
    """
    text = listen.strip()
    if text.isdigit():
        host, port_s = "0.0.0.0", text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f'invalid listen "{listen}": expected "[IPv6]:PORT"')
        host, port_s = text[1:end], text[end + 2 :]
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError(
                f'invalid listen "{listen}": "{host}" is not an IPv6 address'
            ) from None
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            raise ValueError(
                f'invalid listen "{listen}": expected "ADDRESS:PORT", "[IPv6]:PORT", '
                '":PORT" or "PORT"'
            )
        if host in ("", "*"):
            host = "0.0.0.0"
        elif host == "localhost":
            host = "127.0.0.1"
        else:
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise ValueError(
                    f'invalid listen "{listen}": "{host}" is not an IPv4 address '
                    '(write IPv6 as "[::1]:8080")'
                ) from None
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f'invalid listen "{listen}": port must be 1-65535')
    return host, int(port_s)


def format_listen(host: str, port: int) -> str:
    """The normalized text form of a listen address: ``"1.2.3.4:80"`` or ``"[::1]:80"``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """Parse ``"host:port"`` (host a name, IPv4, or ``[IPv6]``). ``ValueError`` if malformed."""
    text = address.strip()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0:
            raise ValueError(f'invalid address "{address}"')
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'invalid address "{address}": bad IPv6 address') from None
    else:
        host, sep, port_part = text.partition(":")
        rest = sep + port_part
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f'invalid address "{address}": bad host name "{host}"')
    if not rest:
        if default_port is None:
            raise ValueError(f'invalid address "{address}": expected "host:port"')
        return host, default_port
    port_s = rest[1:]
    if rest[0] != ":" or not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f'invalid address "{address}": port must be 1-65535')
    return host, int(port_s)


#: The values of ``proxy_next_upstream`` (nginx's, without ``updating``).
NEXT_UPSTREAM = ("error", "timeout", "invalid_header", "http_500", "http_502", "http_503",
                 "http_504", "http_403", "http_404", "http_429", "non_idempotent", "off")


def parse_proxy_pass(value: str, upstreams: dict[str, Any]) -> tuple[str | None, str, int, str]:
    """Parse ``proxy_pass`` into (upstream name or None, host, port, path prefix).

    ``"http://NAME[/prefix]"`` names an upstream when NAME (no port) is a key of ``upstreams``
    (host is then NAME and port 0); else ``"http://host:port[/prefix]"`` is one direct peer
    (the port is required, so a misspelt upstream name is an error). ``https://`` is the same
    with TLS to the upstream (see ``proxy_pass_tls``). The prefix is ``""`` when
    absent; as in nginx, a prefix replaces the part of the URI that matched the location.
    ``ValueError`` for another scheme or a malformed address.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(
            f'invalid proxy_pass "{value}": expected "http(s)://UPSTREAM" or '
            '"http(s)://host:port[/prefix]"'
        )
    authority, slash, path = rest.partition("/")
    prefix = slash + path
    if not authority:
        raise ValueError(f'invalid proxy_pass "{value}": missing host')
    if authority in upstreams:
        return authority, authority, 0, prefix
    if not re.search(r":\d*$", authority):
        raise ValueError(
            f'invalid proxy_pass "{value}": no upstream named "{authority}" '
            '(a direct address needs "host:port")'
        )
    host, port = parse_host_port(authority)
    return None, host, port, prefix


def proxy_pass_tls(value: str) -> bool:
    """True for an ``https://`` proxy_pass (TLS to the upstream)."""
    return value[:8].lower() == "https://"


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


# ---------------------------------------------------------------------------------------------
# Loading.

_PATH_RE = re.compile(r"^(.*) - at `\$(.*)`$", re.S)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(.*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(.*)`$")
_EXPECTED_RE = re.compile(r"^Expected `(.*?)`(.*?)(?:, got `(.*?)`)?$")
_TOP_KEYS = ("main", "http", "shared_dict", "redis", "upstream", "server")


def _translate(base: str, err: msgspec.ValidationError) -> str:
    """Turn msgspec's ``msg - at `$.a[0].b``` into ``base.a[0].b: msg`` in our words."""
    text = str(err)
    m = _PATH_RE.match(text)
    msg, sub = (m.group(1), m.group(2)) if m else (text, "")
    path = base + sub
    if mu := _UNKNOWN_RE.match(msg):
        return f'{path}: unknown key "{mu.group(1)}"'
    if mm := _MISSING_RE.match(msg):
        return f'{path}: missing required key "{mm.group(1)}"'
    if me := _EXPECTED_RE.match(msg):
        want = me.group(1).replace("array", "list").replace("object", "table")
        got = (me.group(3) or "").replace("array", "list").replace("object", "table")
        return f"{path}: expected {want}{me.group(2)}" + (f", got {got}" if got else "")
    return f"{path}: {msg}"


class _Loader:
    def __init__(self, path: str) -> None:
        self.file = os.path.abspath(path)
        self.base = os.path.dirname(self.file)
        self.errors: list[str] = []
        self.hook = _make_dec_hook(self.base)

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def convert(self, raw: Any, typ: type, path: str) -> Any:
        if isinstance(raw, dict):
            for key in _RESERVED:
                if key in raw:
                    self.err(path, f'unknown key "{key}"')
                    return None
        try:
            return _plain(msgspec.convert(raw, typ, dec_hook=self.hook))
        except msgspec.ValidationError as e:
            self.errors.append(_translate(path, e))
            return None

    def table(self, raw: dict[str, Any], key: str) -> dict[str, Any] | None:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.err(key, f"expected a table, got {type(value).__name__}")
            return None
        return value

    def run(self, text: str) -> Config:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(self.file, [f"TOML syntax error: {e}"]) from None
        for key in raw:
            if key not in _TOP_KEYS:
                self.err(key, f'unknown key "{key}" (top level takes {", ".join(_TOP_KEYS)})')

        main = self.convert(self.table(raw, "main") or {}, Main, "main") or Main()
        http = self.convert(self.table(raw, "http") or {}, Http, "http") or Http()
        self.post_main(main)
        self.post_http(http)

        shared: dict[str, int] = {}
        for name, value in (self.table(raw, "shared_dict") or {}).items():
            p = f"shared_dict.{name}"
            if not _DICT_NAME_RE.match(name):
                self.err(p, "a shared dict name is letters, digits, _ and -, "
                         "not starting with a digit")
            try:
                size = parse_size(value)
            except ValueError as e:
                self.err(p, str(e))
                continue
            if size < 16384:
                self.err(p, f"size {size} is too small (minimum 16k)")
            shared[name] = size

        redis: dict[str, Redis] = {}
        for name, value in (self.table(raw, "redis") or {}).items():
            r = self.convert(value, Redis, f"redis.{name}")
            if r is not None:
                r.name = name
                self.post_redis(r, f"redis.{name}")
                redis[name] = r

        upstreams: dict[str, Upstream] = {}
        for name, value in (self.table(raw, "upstream") or {}).items():
            u = self.convert(value, Upstream, f"upstream.{name}")
            if u is not None:
                u.name = name
                self.post_upstream(u, f"upstream.{name}")
                upstreams[name] = u

        servers = self.servers(raw.get("server"), http, shared, redis, upstreams)
        cfg = Config(
            main=main, http=http, shared_dict=shared, redis=redis, upstream=upstreams,
            server=tuple(servers), file=self.file,
        )
        if self.errors:
            raise ConfigError(self.file, self.errors)
        return cfg

    # -- sections -----------------------------------------------------------------------------

    def post_main(self, main: Main) -> None:
        if main.log_level not in LOG_LEVELS:
            self.err("main.log_level", f'invalid level "{main.log_level}": expected one of '
                     + ", ".join(LOG_LEVELS))
        if main.error_log not in _LOG_SPECIAL:
            main.error_log = _abspath(self.base, main.error_log)
        main.python_path = tuple(_abspath(self.base, p) for p in main.python_path)
        for key in ("init", "init_worker", "exit_worker"):
            self.check_handlers(f"main.{key}", getattr(main, key))
        if main.status_zone_size < 64 * 1024:
            self.err("main.status_zone_size",
                     f"too small ({int(main.status_zone_size)} bytes): at least 64k")

    def post_http(self, http: Http) -> None:
        if http.access_log_format not in ACCESS_LOG_FORMATS and "$" not in http.access_log_format:
            self.err("http.access_log_format",
                     f'invalid format "{http.access_log_format}": expected "combined", "json" '
                     'or a format with $variables')
        if http.request_id_header and not _TOKEN_RE.match(http.request_id_header):
            self.err("http.request_id_header",
                     f'invalid header name "{http.request_id_header}"')
        elif http.request_id_header.lower() in ROUTING_FIELDS:
            self.err("http.request_id_header",
                     f'"{http.request_id_header}" frames or routes the request; '
                     "choose another header name")
        if http.access_log not in _ACCESS_SPECIAL:
            http.access_log = _abspath(self.base, http.access_log)
        for key in PHASES:
            self.check_handlers(f"http.{key}", getattr(http, key))

    def post_redis(self, r: Redis, path: str) -> None:
        if not r.url.startswith(("redis://", "rediss://", "unix://")):
            self.err(f"{path}.url",
                     f'invalid url "{r.url}": expected redis://, rediss:// or unix://')

    def check_proxy_redirect(self, value: Any, path: str) -> None:
        items = (value,) if isinstance(value, str) else value
        for i, item in enumerate(items):
            where = path if isinstance(value, str) else f"{path}[{i}]"
            if isinstance(item, str):
                if item == "off" and isinstance(value, str):
                    continue
                if item != "default":
                    self.err(where, f'invalid value "{item}": expected "default", "off" or '
                             '["redirect", "replacement"]')
            elif not item[0]:
                self.err(where, "the redirect to replace is empty")
            elif item[0].startswith("~"):
                self.err(where, "regular expressions are not supported in proxy_redirect")

    def post_upstream(self, u: Upstream, path: str) -> None:
        if not u.servers:
            self.err(f"{path}.servers", "an upstream needs at least one server")
        if u.balance not in BALANCE_METHODS:
            self.err(f"{path}.balance", f'invalid balance "{u.balance}": expected one of '
                     + ", ".join(BALANCE_METHODS))
        for i, s in enumerate(u.servers):
            assert isinstance(s, UpstreamServer)
            try:
                parse_host_port(s.address)
            except ValueError as e:
                self.err(f"{path}.servers[{i}]", str(e))
            if s.backup and u.balance in ("ip_hash", "hash", "random"):
                self.err(f"{path}.servers[{i}]",
                         f'backup servers cannot be used with "{u.balance}"')
        if u.balance == "hash" and not u.hash:
            self.err(f"{path}.hash", 'balance = "hash" needs a key, e.g. hash = "$request_uri"')
        elif u.balance != "hash" and (u.hash or u.consistent):
            self.err(f"{path}.hash" if u.hash else f"{path}.consistent",
                     'only for balance = "hash"')
        if u.two and u.balance != "random":
            self.err(f"{path}.two", 'only for balance = "random"')
        if u.servers and all(isinstance(s, UpstreamServer) and s.backup for s in u.servers):
            self.err(f"{path}.servers", "an upstream needs at least one non-backup server")

    def servers(self, raw_servers: Any, http: Http, shared: dict[str, int],
                redis: dict[str, Redis], upstreams: dict[str, Upstream]) -> list[Server]:
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
                self.locations(raw_locs, sp, http, shared, redis, upstreams)
                continue
            server.path = sp
            listens: list[str] = []
            for j, text in enumerate(server.listen):
                try:
                    listens.append(format_listen(*parse_listen(text)))
                except ValueError as e:
                    self.err(f"{sp}.listen[{j}]", str(e))
            if not server.listen:
                self.err(f"{sp}.listen", "at least one address is required")
            server.listen = tuple(dict.fromkeys(listens))
            names: list[str] = []
            for j, name in enumerate(server.server_name):
                try:
                    names.append(_check_server_name(name))
                except ValueError as e:
                    self.err(f"{sp}.server_name[{j}]", str(e))
            server.server_name = tuple(dict.fromkeys(names))
            for addr in server.listen:
                for name in server.server_name:
                    other = seen_names.setdefault((addr, name), sp)
                    if other != sp:
                        self.err(f"{sp}.server_name",
                                 f'conflicting server name "{name}" on {addr} (also in {other})')
            server.location = tuple(
                self.locations(raw_locs, sp, http, shared, redis, upstreams)
            )
            out.append(server)
        return out

    def locations(self, raw_locs: Any, sp: str, http: Http, shared: dict[str, int],
                  redis: dict[str, Redis], upstreams: dict[str, Upstream]) -> list[Location]:
        if not isinstance(raw_locs, list) or not all(isinstance(x, dict) for x in raw_locs):
            self.err(f"{sp}.location", "expected an array of tables ([[server.location]])")
            return []
        out: list[Location] = []
        seen: dict[tuple[str, str], str] = {}
        for j, raw in enumerate(raw_locs):
            lp = f"{sp}.location[{j}]"
            loc = self.convert(raw, Location, lp)
            if loc is None:
                continue
            loc.path = lp
            self.post_location(loc, lp, http, shared, redis, upstreams)
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

    def post_location(self, loc: Location, lp: str, http: Http, shared: dict[str, int],
                      redis: dict[str, Redis], upstreams: dict[str, Upstream]) -> None:
        kinds = [k for k, v in (("content", loc.content), ("proxy_pass", loc.proxy_pass),
                                ("return", loc.return_), ("root", loc.root),
                                ("status", loc.status)) if v is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            self.err(lp, "exactly one of content, proxy_pass, return, root, status is "
                     f"required (found: {found})")
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
        if loc.proxy_pass is not None:
            try:
                parse_proxy_pass(loc.proxy_pass, upstreams)
            except ValueError as e:
                self.err(f"{lp}.proxy_pass", str(e))
        self.check_proxy_redirect(loc.proxy_redirect, f"{lp}.proxy_redirect")
        ca = loc.proxy_ssl_trusted_certificate
        if ca is not None:
            try:
                import ssl

                ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as e:
                self.err(f"{lp}.proxy_ssl_trusted_certificate",
                         f"cannot load {ca}: {getattr(e, 'strerror', None) or e}")
        cert, key = loc.proxy_ssl_certificate, loc.proxy_ssl_certificate_key
        if (cert is None) != (key is None):
            self.err(f"{lp}.proxy_ssl_certificate",
                     "proxy_ssl_certificate and proxy_ssl_certificate_key go together")
        elif cert is not None:
            import ssl

            try:
                ssl.create_default_context().load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as e:
                self.err(f"{lp}.proxy_ssl_certificate",
                         f"cannot load {cert} with {key}: {getattr(e, 'strerror', None) or e}")
        bad = [t for t in loc.proxy_next_upstream if t not in NEXT_UPSTREAM]
        if bad:
            self.err(f"{lp}.proxy_next_upstream", f'invalid value "{bad[0]}": expected '
                     + ", ".join(f'"{t}"' for t in NEXT_UPSTREAM))
        elif "off" in loc.proxy_next_upstream and len(loc.proxy_next_upstream) > 1:
            self.err(f"{lp}.proxy_next_upstream", '"off" cannot be combined with other values')
        if loc.return_ is not None:
            self.check_return(loc.return_, f"{lp}.return")
        if loc.status is not None and loc.status not in STATUS_KINDS:
            self.err(f"{lp}.status", f'invalid status "{loc.status}": expected "json", '
                     '"prometheus" or "dashboard"')
        if loc.limit is not None:
            self.check_limit(loc.limit, f"{lp}.limit", shared, redis)
        if loc.jwt is not None:
            self.check_jwt(loc.jwt, f"{lp}.jwt")
        for key in ("add_header", "proxy_set_header"):
            for name in getattr(loc, key):
                if not _TOKEN_RE.match(name):
                    self.err(f"{lp}.{key}", f'invalid header name "{name}"')
        if not loc.index or not all(loc.index):
            self.err(f"{lp}.index", "index needs at least one non-empty file name")

    def check_handlers(self, path: str, specs: tuple[str, ...]) -> None:
        for spec in specs:
            try:
                parse_handler(spec)
            except ValueError as e:
                self.err(path, str(e))

    def check_return(self, r: Return, path: str) -> None:
        if not 100 <= r.status <= 599:
            self.err(f"{path}.status", f"invalid status {r.status}: must be 100-599")
        if r.status in REDIRECT_STATUSES:
            if not r.location:
                self.err(path, f"status {r.status} is a redirect and needs a location")
            if r.body is not None:
                self.err(f"{path}.body", "a redirect takes a location, not a body")
        elif r.location is not None:
            self.err(f"{path}.location", "location is only used with 301, 302, 303, 307, 308 "
                     f"(status is {r.status})")

    def check_limit(self, lim: Limit, path: str, shared: dict[str, int],
                    redis: dict[str, Redis]) -> None:
        kind, sep, name = lim.store.partition(":")
        if not sep or kind not in ("shm", "redis"):
            self.err(f"{path}.store", f'invalid store "{lim.store}": expected "shm:NAME" or '
                     '"redis:NAME"')
        elif kind == "shm" and name not in shared:
            self.err(f"{path}.store",
                     f'no shared_dict named "{name}" (declare it in [shared_dict])')
        elif kind == "redis" and name not in redis:
            self.err(f"{path}.store", f'no redis named "{name}" (declare it as [redis.{name}])')
        if lim.fail not in ("open", "closed"):
            self.err(f"{path}.fail", f'invalid fail "{lim.fail}": expected "open" or "closed"')
        if not 400 <= lim.status <= 599:
            self.err(f"{path}.status", f"invalid status {lim.status}: must be 400-599")
        if not lim.key.strip():
            self.err(f"{path}.key", "key must not be empty")

    def check_jwt(self, jwt: Jwt, path: str) -> None:
        algs = set(jwt.algorithms)
        if not algs:
            self.err(f"{path}.algorithms", "at least one algorithm is required")
        bad = [a for a in jwt.algorithms if a not in JWT_HMAC | JWT_ASYMMETRIC]
        if bad:
            self.err(f"{path}.algorithms", f'unsupported algorithm "{bad[0]}": expected any of '
                     + ", ".join(sorted(JWT_HMAC | JWT_ASYMMETRIC)))
        hmac, asym = algs & JWT_HMAC, algs & JWT_ASYMMETRIC
        if hmac and asym:
            self.err(f"{path}.algorithms", "do not mix HMAC (HS*) and public-key algorithms in "
                     "one location (algorithm confusion)")
        sources = [k for k in ("secret", "public_key", "jwks_url") if getattr(jwt, k) is not None]
        if len(sources) != 1:
            self.err(path, "exactly one key source is required: secret, public_key or jwks_url "
                     f"(found: {', '.join(sources) or 'none'})")
        if hmac and jwt.secret is None:
            self.err(path, f"{', '.join(sorted(hmac))} needs a secret")
        if asym and jwt.secret is not None:
            self.err(f"{path}.secret", f"{', '.join(sorted(asym))} needs public_key or jwks_url, "
                     "not a secret")
        for key in ("secret", "public_key"):
            value = getattr(jwt, key)
            if isinstance(value, str) and value.startswith("file:"):
                setattr(jwt, key, "file:" + _abspath(self.base, value[5:]))
            elif isinstance(value, str) and value.startswith("env:") and not value[4:]:
                self.err(f"{path}.{key}", "env: needs a variable name")
        if jwt.jwks_url is not None and not jwt.jwks_url.startswith(("http://", "https://")):
            self.err(f"{path}.jwks_url", f'invalid url "{jwt.jwks_url}": expected http(s)://')
        for name in jwt.claims_to_headers.values():
            if not _TOKEN_RE.match(name):
                self.err(f"{path}.claims_to_headers", f'invalid header name "{name}"')


def _check_server_name(name: str) -> str:
    """Validate and normalize (lower-case) one server_name; regexes are kept as written."""
    if name.startswith("~"):
        try:
            re.compile(name[1:])
        except re.error as e:
            raise ValueError(f'invalid regex "{name[1:]}": {e}') from None
        return name
    low = name.lower().rstrip(".") if name not in ("", ".") else name
    stars = low.count("*")
    if stars > 1 or (stars == 1 and not (low.startswith("*.") or low.endswith(".*"))):
        raise ValueError(f'invalid server name "{name}": a wildcard is "*.example.com" or '
                         '"www.example.*"')
    if any(c.isspace() or c == "/" for c in low):
        raise ValueError(f'invalid server name "{name}"')
    return low


def loads(text: str, path: str) -> Config:
    """Decode and validate a config given as text; ``path`` is where it came from (relative
    paths inside are resolved against its folder). Raises ``ConfigError(path, messages)``."""
    return _Loader(path).run(text)


def load(path: str) -> Config:
    """Read, decode and validate the config file at ``path``.

    Raises ``ConfigError(path, messages)`` when it cannot be read or is invalid.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(os.path.abspath(path), [f"cannot read: {e}"]) from None
    return loads(text, path)
