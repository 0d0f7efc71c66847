"""What config.py and the features' schemas share: value types, decoding, validation context.

A declarative feature describes itself with one ``Feature`` (its location keys, their check,
the function that builds its handler, and any top-level tables it owns); ``edgeworker.config``
lists the features and composes them into the ``Location`` and ``Config`` Structs. This module
imports nothing of edgeworker but ``units`` and ``confsource``, so feature schemas and
config.py both import it.

The value types (``Size``, ``Duration``…) are markers the decode hook converts; after loading
``plain`` turns them back into the builtins they stand for, so a loaded config is plain data.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi

from .confsource import SourceFile, suggest
from .units import Rate, parse_duration, parse_rate, parse_size

__all__ = [
    "RESERVED",
    "Base",
    "Check",
    "Context",
    "Duration",
    "Feature",
    "Handlers",
    "NonNegInt",
    "PathStr",
    "PosInt",
    "Rate",
    "Size",
    "StrList",
    "Table",
    "TOKEN_RE",
    "Workers",
    "abspath",
    "check_server_name",
    "format_listen",
    "inherit",
    "make_dec_hook",
    "parse_handler",
    "parse_host_port",
    "parse_listen",
    "parse_match",
    "plain",
    "suggest",
    "translate",
]

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


def make_dec_hook(base: str) -> Callable[[type, Any], Any]:
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
            return PathStr(abspath(base, obj))
        raise NotImplementedError(typ)

    return dec_hook


_PLAIN: dict[type, type] = {Size: int, Duration: float, Workers: int, PathStr: str}


def plain(obj: Any) -> Any:
    """Replace the decode-time marker types by the builtins they stand for, in place for
    Structs (``Rate`` stays: it carries the count and period)."""
    if isinstance(obj, msgspec.Struct):
        for name in obj.__struct_fields__:
            setattr(obj, name, plain(getattr(obj, name)))
        return obj
    base = _PLAIN.get(type(obj))
    if base is not None:
        return base(obj)
    if isinstance(obj, tuple):
        return tuple(plain(x) for x in obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def abspath(base: str, path: str) -> str:
    """``path`` made absolute against the folder ``base`` (``~`` expanded)."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A config table: unknown keys are errors, every key is given by name."""


NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER_RE = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")
_MATCH_RE = re.compile(r"^(=|\^~|~\*|~)\s*(.*)$", re.S)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
#: An HTTP field name (RFC 9110 token).
TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


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


def check_server_name(name: str) -> str:
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
        raise ValueError(
            f'invalid server name "{name}": a wildcard is "*.example.com" or "www.example.*"'
        )
    if any(c.isspace() or c == "/" for c in low):
        raise ValueError(f'invalid server name "{name}"')
    return low


_PATH_RE = re.compile(r"^(.*) - at `\$(.*)`$", re.S)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(.*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(.*)`$")
_EXPECTED_RE = re.compile(r"^Expected `(.*?)`(.*?)(?:, got `(.*?)`)?$")
_SEGMENT_RE = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


def _unwrap(info: Any, want: tuple[type, ...]) -> Any:
    """The first of ``want`` in ``info`` (through Optional/unions and constraints), or None."""
    if isinstance(info, mi.Metadata):
        return _unwrap(info.type, want)
    if isinstance(info, mi.UnionType):
        for t in info.types:
            if (found := _unwrap(t, want)) is not None:
                return found
        return None
    return info if isinstance(info, want) else None


_ITEMS = (mi.ListType, mi.VarTupleType, mi.TupleType, mi.DictType, mi.SetType, mi.FrozenSetType)


def keys_at(typ: type, sub: str) -> list[str]:
    """The keys the table at ``sub`` (msgspec's path below ``typ``: ``.a[0].b``) takes."""
    try:
        info: Any = mi.type_info(typ)
        for name, index in _SEGMENT_RE.findall(sub):
            if name:
                struct = _unwrap(info, (mi.StructType,))
                info = next(f.type for f in struct.fields if f.encode_name == name)
                continue
            items = _unwrap(info, _ITEMS)
            if isinstance(items, mi.TupleType):
                info = items.item_types[int(index)]
            elif isinstance(items, mi.DictType):
                info = items.value_type
            else:
                info = items.item_type
        struct = _unwrap(info, (mi.StructType,))
    except (AttributeError, StopIteration, IndexError, ValueError, TypeError):
        return []
    if struct is None:
        return []
    return [f.encode_name for f in struct.fields if f.encode_name not in RESERVED]


def translate(base: str, err: msgspec.ValidationError, typ: type | None = None) -> str:
    """Turn msgspec's ``msg - at `$.a[0].b``` into ``base.a[0].b: msg`` in our words; an
    unknown key of ``typ`` gets the closest known key as a suggestion."""
    text = str(err)
    m = _PATH_RE.match(text)
    msg, sub = (m.group(1), m.group(2)) if m else (text, "")
    path = base + sub
    if mu := _UNKNOWN_RE.match(msg):
        key = mu.group(1)
        hint = suggest(key, keys_at(typ, sub)) if typ is not None else ""
        return f'{path}: unknown key "{key}"{hint}'
    if mm := _MISSING_RE.match(msg):
        return f'{path}: missing required key "{mm.group(1)}"'
    if me := _EXPECTED_RE.match(msg):
        want = me.group(1).replace("array", "list").replace("object", "table")
        got = (me.group(3) or "").replace("array", "list").replace("object", "table")
        return f"{path}: expected {want}{me.group(2)}" + (f", got {got}" if got else "")
    return f"{path}: {msg}"


_NOT_SCALAR = object()
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")


def _scalar(text: str) -> Any:
    """The integer, float or boolean ``text`` spells in TOML (``8``, ``0.5``, ``true``), or
    ``_NOT_SCALAR``."""
    if text in ("true", "false"):
        return text == "true"
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return _NOT_SCALAR


def _retyped(raw: Any, keys: list[Any]) -> Any:
    """``raw`` with the string at ``keys`` read as the TOML number or boolean it spells (a
    value ``${NAME}`` expansion wrote: ``workers = "${WORKERS}"``), else ``_NOT_SCALAR``."""
    if not keys:
        return _scalar(raw) if isinstance(raw, str) else _NOT_SCALAR
    try:
        inner = _retyped(raw[keys[0]], keys[1:])
    except (KeyError, IndexError, TypeError):
        return _NOT_SCALAR
    if inner is _NOT_SCALAR:
        return inner
    copy = dict(raw) if isinstance(raw, dict) else list(raw)
    copy[keys[0]] = inner
    return copy


#: Keys the loader sets itself; a config that writes them is refused.
RESERVED = "__path__", "__name__", "__listen_ssl__", "__listen_http2__"


class Context:
    """One load of a config file: its folder, the tables decoded so far, the errors found.

    Feature checks get it: ``err(path, message)`` records a problem at a config path; ``base``
    is the folder relative paths are resolved against; ``shared`` (name -> bytes) and ``tables``
    (a table's key, ``redis`` or a feature's -> {NAME: Struct}) are what locations may refer
    to.
    """

    def __init__(self, path: str) -> None:
        #: the config file's absolute path; the loader gives it the line of each key
        self.file = SourceFile(os.path.abspath(path))
        self.base = os.path.dirname(self.file)
        self.errors: list[str] = []
        self.hook = make_dec_hook(self.base)
        self.shared: dict[str, int] = {}
        self.tables: dict[str, dict[str, Any]] = {}
        #: the paths of the values ``${NAME}`` expansion wrote (see ``convert``)
        self.expanded: set[str] = set()

    def err(self, path: str, msg: str) -> None:
        """Record ``path: msg``."""
        self.errors.append(f"{path}: {msg}")

    def convert(self, raw: Any, typ: type, path: str) -> Any:
        """``raw`` decoded as ``typ`` (plain values), or None with the errors recorded."""
        if isinstance(raw, dict):
            for key in RESERVED:
                if key in raw:
                    self.err(path, f'unknown key "{key}"')
                    return None
        while True:  # each pass turns one more expanded string into a number or boolean
            try:
                return plain(msgspec.convert(raw, typ, dec_hook=self.hook))
            except msgspec.ValidationError as e:
                m = _PATH_RE.match(str(e))
                sub = m.group(2) if m else ""
                segments = _SEGMENT_RE.findall(sub)  # (key, "") or ("", index) each
                retyped = _NOT_SCALAR
                if f"{path}{sub}" in self.expanded and all(k or i.isdigit() for k, i in segments):
                    retyped = _retyped(raw, [k or int(i) for k, i in segments])
                if retyped is _NOT_SCALAR:
                    self.errors.append(translate(path, e, typ))
                    return None
                raw = retyped

    def table(self, raw: dict[str, Any], key: str) -> dict[str, Any] | None:
        """The table ``raw[key]`` (``{}`` when absent), or None when it is not a table."""
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.err(key, f"expected a table, got {type(value).__name__}")
            return None
        return value

    def decode_table(self, raw: dict[str, Any], t: Table) -> None:
        """Decode and check each ``[KEY.NAME]`` of the table ``t`` into ``tables[KEY]``."""
        found = self.tables[t.key] = {}
        for name, value in (self.table(raw, t.key) or {}).items():
            item = self.convert(value, t.schema, f"{t.key}.{name}")
            if item is not None:
                item.name = name
                t.check(item, f"{t.key}.{name}", self)
                found[name] = item

    def check_header_names(self, path: str, names: Iterable[str]) -> None:
        """Each of ``names`` is an HTTP field name."""
        for name in names:
            if not TOKEN_RE.match(name):
                self.err(path, f'invalid header name "{name}"')

    def check_handlers(self, path: str, specs: tuple[str, ...]) -> None:
        """Each ``"module:function"`` of ``specs`` is well formed."""
        for spec in specs:
            try:
                parse_handler(spec)
            except ValueError as e:
                self.err(path, str(e))


#: A check: (the decoded Struct, its config path, the load) -> None; problems go to ``err``.
Check = Callable[[Any, str, Context], None]


@dataclass(frozen=True)
class Table:
    """A top-level ``[KEY.NAME]`` table (``redis``, or one a feature owns): each NAME is
    decoded as ``schema`` (whose ``name`` field is set to NAME), checked, and kept in
    ``Config.KEY``."""

    key: str
    schema: type
    check: Check


@dataclass(frozen=True)
class Feature:
    """A declarative location feature.

    Its build function, ``"module:function"`` imported when a worker builds a location that
    sets the feature's ``key``, gets (location, app) and returns the handler: given as
    ``access``, the handler runs before the location's own access handlers (features in
    registry order); given as ``content``, it is the location's content source (a location
    has exactly one). ``fields`` are the location keys it adds, as ``msgspec.defstruct`` takes
    them: (name, type, default); the first is ``key``. ``check`` runs on every decoded
    location; ``tables`` are the top-level tables it owns.

    ``inherited`` are keys settable in ``[http]``, in a ``[[server]]`` and in a location, as
    nginx's ``http``/``server``/``location`` contexts: (name, type, default) each; a location
    that does not set one takes its server's value, else ``[http]``'s, else the default (the
    inner one wins). ``scope_check`` runs on each scope's own values (a key not set there is
    None) with that scope's config path (``http``, ``server[0]``, ``server[0].location[1]``),
    before the location inherits. Given as ``output``, the build function makes the
    location's output filter (below the header_filter/body_filter handlers), or returns None
    when the location does not use it.
    """

    fields: tuple[tuple[str, Any, Any], ...]
    check: Check
    access: str = ""
    content: str = ""
    output: str = ""
    tables: tuple[Table, ...] = ()
    inherited: tuple[tuple[str, Any, Any], ...] = ()
    scope_check: Check | None = None

    @property
    def key(self) -> str:
        """The location key that turns the feature on."""
        return (self.fields or self.inherited)[0][0]


@dataclass(frozen=True)
class ServerFeature:
    """A feature that adds keys to ``[[server]]`` (TLS termination).

    ``fields`` are (name, type, default) as ``msgspec.defstruct`` takes them: each key is
    accepted in ``[http]`` with that default, and in ``[[server]]`` where it defaults to the
    ``[http]`` value (a server's own value wins, as nginx's http-level directives).
    ``listen_flags`` are the words it accepts after a listen address (``"0.0.0.0:443 ssl"``).
    ``check(servers, http, ctx)`` runs once every server is decoded, with the inherited values
    already filled in: it validates them, across servers too.
    """

    fields: tuple[tuple[str, Any, Any], ...]
    check: Callable[[list[Any], Any, Context], None]
    listen_flags: tuple[str, ...] = ()

    @property
    def server_fields(self) -> list[tuple[str, Any, Any]]:
        """The ``[[server]]`` fields: None (not set there: inherited from ``[http]``)."""
        return [(name, typ | None, None) for name, typ, _default in self.fields]

    def inherit(self, server: Any, http: Any) -> None:
        """Fill the keys ``server`` does not set from ``http``."""
        inherit(server, self.fields, http)


def inherit(scope: Any, keys: Iterable[tuple[str, Any, Any]], *outer: Any) -> None:
    """nginx's rule for a key settable in nested contexts: each of ``keys`` ((name, type,
    default)) that ``scope`` does not set (None) takes the value of the first ``outer`` scope
    (innermost first; None: no such scope) that sets it, else its default."""
    for name, _typ, default in keys:
        if getattr(scope, name) is None:
            for out in outer:
                value = getattr(out, name) if out is not None else None
                if value is not None:
                    break
            else:
                value = default
            setattr(scope, name, value)


class Redis(Base):
    """``[redis.NAME]``: a named Redis connection (per-worker pool).

    Keys:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://``; ``?sentinel=NAME`` and
            ``?cluster=1`` for Sentinel and Cluster
        connect_timeout: the longest wait for a connection
        timeout: the longest wait for each reply, and for a free pooled connection
        pool_size: connections per worker
    """

    url: str = "redis://127.0.0.1:6379/0"
    connect_timeout: Duration = Duration(0.1)
    timeout: Duration = Duration(0.1)
    pool_size: PosInt = 100
    name: str = msgspec.field(default="", name="__name__")


def _check_redis(r: Redis, path: str, ctx: Context) -> None:
    if not r.url.startswith(("redis://", "rediss://", "unix://")):
        ctx.err(f"{path}.url", f'invalid url "{r.url}": expected redis://, rediss:// or unix://')


#: ``[redis.NAME]``: the Redis connections any feature (or handler) names.
REDIS_TABLE = Table("redis", Redis, _check_redis)
