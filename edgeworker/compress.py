"""Response compression: ``gzip`` and ``brotli``, with nginx's keys and defaults.

The keys are settable in ``[http]``, a ``[[server]]`` or a location (the inner one wins, as
nginx's ``http``/``server``/``location`` contexts): ``gzip``, ``gzip_types``,
``gzip_min_length``, ``gzip_comp_level``, ``gzip_proxied``, ``gzip_vary``,
``gzip_http_version``, ``gzip_disable``, and ``brotli``, ``brotli_types``,
``brotli_comp_level``, ``brotli_min_length`` (the ``brotli`` package, ``edgeworker[brotli]``).

A location with either on gets a ``Compression`` as its output filter (``phases``). It runs
below the user's header_filter and body_filter handlers, as nginx's gzip filter runs below
the filters of the modules added after it: those handlers see the uncompressed response.
``Compression.start`` decides once per response, when its head is final:

- the response: status 2xx other than 204 and 206, or 4xx/5xx (not 1xx, 3xx, 204, 206, 304:
  nginx compresses 200, 403 and 404 only); no ``Content-Encoding``; its type (without
  parameters) ``text/html`` or one of the ``*_types`` (``"*"``: any); its length, when known,
  at least ``*_min_length``. Such a response "could be compressed": it gets ``Vary:
  Accept-Encoding`` (``gzip_vary``, on by default), whatever the request;
- the request: ``Accept-Encoding`` accepts the coding (q-values, ``*``; ``q=0`` refuses);
  HTTP/1.1, or HTTP/1.0 with ``gzip_http_version = "1.0"``; its ``User-Agent`` matches no
  ``gzip_disable`` regex; without ``Via``, or with ``Via`` when a ``gzip_proxied`` condition
  holds. These request conditions apply to brotli too.

Brotli is chosen over gzip when the client's q-value for ``br`` is at least the one for
``gzip``. A compressed response gets ``Content-Encoding``, its strong ``ETag`` made weak
(``W/"…"``, nginx since 1.7.3) and no ``Accept-Ranges``. A whole body (``req.respond``) is
compressed at once and keeps an exact ``Content-Length``; a streamed one (``req.stream``, a
proxied or static body sent with ``send_head``) goes through one compressor per response, a
flush per piece (each piece reaches the client), chunked (HTTP/1.1) or close-delimited
(HTTP/1.0). A HEAD gets the head a GET would get.

Keys:
    gzip: compress responses with gzip (nginx ``gzip``)
    gzip_types: MIME types to compress, ``text/html`` always included; ``"*"``: any type
    gzip_min_length: the smallest body compressed, when its length is known
    gzip_comp_level: zlib level, 1 to 9
    gzip_proxied: for requests that came through a proxy (with ``Via``): ``"off"`` or a list
        of ``expired``, ``no-cache``, ``no-store``, ``private``, ``no_last_modified``,
        ``no_etag``, ``auth``, ``any``
    gzip_vary: ``Vary: Accept-Encoding`` on every response that could be compressed (nginx's
        default is off)
    gzip_http_version: the lowest request version compressed, ``"1.0"`` or ``"1.1"``
    gzip_disable: regexes on ``User-Agent`` whose requests are not compressed; ``"msie6"``
        is nginx's mask
    brotli: compress with brotli (the ``brotli`` package)
    brotli_types: as ``gzip_types``, for brotli
    brotli_comp_level: brotli quality, 0 to 11
    brotli_min_length: as ``gzip_min_length``, for brotli
"""

from __future__ import annotations

import re
import time
import zlib
from email.utils import parsedate_to_datetime
from typing import Any

from .confschema import Context, Feature, Size, StrList, suggest

try:  # optional: edgeworker[brotli]
    import brotli
except ImportError:  # pragma: no cover - depends on the installation
    brotli = None

__all__ = [
    "FEATURE",
    "PROXIED",
    "Compression",
    "accepted",
    "make_output",
    "parse_accept_encoding",
]

#: The values of ``gzip_proxied`` (nginx's).
PROXIED = (
    "off",
    "expired",
    "no-cache",
    "no-store",
    "private",
    "no_last_modified",
    "no_etag",
    "auth",
    "any",
)
_MIME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_QVALUE_RE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")
#: nginx's ``msie6`` mask of ``gzip_disable`` (MSIE 4-6, not 6.0 with SV1)
_MSIE6 = re.compile(r"MSIE [4-6]\.(?!.*SV1)")
_LEVELS = {"gzip_comp_level": (1, 9), "brotli_comp_level": (0, 11)}
_PIECE = 65536
# statuses whose body is never compressed: 1xx, 204, 206 (a range), 304, and redirects
_NO_COMPRESS = frozenset((204, 206, 304))


# ---------------------------------------------------------------------------- negotiation
def parse_accept_encoding(value: str) -> dict[str, float]:
    """``Accept-Encoding`` as {coding (lower-case): q}. A malformed q-value counts as 0; a
    coding listed twice keeps its first q."""
    out: dict[str, float] = {}
    for item in value.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        if params:
            for param in params.split(";"):
                name, _, v = param.partition("=")
                if name.strip().lower() == "q":
                    v = v.strip()
                    q = float(v) if _QVALUE_RE.match(v) else 0.0
        out.setdefault(coding, q)
    return out


_AE_CACHE: dict[str, tuple[float, float]] = {}


def accepted(value: str | None) -> tuple[float, float]:
    """(q of gzip, q of br) for an ``Accept-Encoding`` value (None: the field is absent:
    nothing is accepted but identity). ``x-gzip`` is gzip; ``*`` covers a coding not
    listed."""
    if value is None:
        return 0.0, 0.0
    found = _AE_CACHE.get(value)
    if found is not None:
        return found
    q = parse_accept_encoding(value)
    star = q.get("*", 0.0)
    gz = q.get("gzip")
    if gz is None:
        gz = q.get("x-gzip", star)
    found = (gz, q.get("br", star))
    if len(_AE_CACHE) >= 256:
        _AE_CACHE.clear()
    _AE_CACHE[value] = found
    return found


# ----------------------------------------------------------------------------- encoders
class _Gzip:
    """One gzip stream (zlib, wbits 31): ``feed`` flushes (Z_SYNC_FLUSH), ``end`` finishes."""

    __slots__ = ("_c",)

    def __init__(self, level: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        c = self._c
        return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)

    def end(self, data: bytes) -> bytes:
        c = self._c
        return c.compress(data) + c.flush(zlib.Z_FINISH)


class _Brotli:
    """One brotli stream: ``feed`` flushes, ``end`` finishes."""

    __slots__ = ("_c",)

    def __init__(self, level: int) -> None:
        self._c = brotli.Compressor(quality=level, lgwin=19)

    def feed(self, data: bytes) -> bytes:
        c = self._c
        return c.process(data) + c.flush()

    def end(self, data: bytes) -> bytes:
        c = self._c
        return c.process(data) + c.finish()


class _Head:
    """The encoder of a HEAD request: the head says what a GET gets, no body is made."""

    __slots__ = ()

    def feed(self, data: bytes) -> bytes:
        return b""

    end = feed


_HEAD = _Head()


def _expired(expires: str, date: str | None) -> bool:
    """``Expires`` at or before the response's ``Date`` (or now): caching is off. An invalid
    date (``0``…) is in the past (RFC 9111 §5.3)."""
    try:
        when = parsedate_to_datetime(expires).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return True
    now = time.time()
    if date is not None:
        try:
            now = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return when <= now


class Compression:
    """The compression settings of one location, resolved (see the module docstring)."""

    __slots__ = (
        "gzip_level",
        "gzip_types",
        "gzip_min",
        "brotli_level",
        "brotli_types",
        "brotli_min",
        "vary",
        "http10",
        "proxied",
        "disable",
    )

    def __init__(self, loc: Any) -> None:
        #: 0 when gzip is off
        self.gzip_level = loc.gzip_comp_level if loc.gzip else 0
        #: None when brotli is off
        self.brotli_level = loc.brotli_comp_level if loc.brotli else None
        self.gzip_types = _types(loc.gzip_types)
        self.brotli_types = _types(loc.brotli_types)
        self.gzip_min = loc.gzip_min_length
        self.brotli_min = loc.brotli_min_length
        self.vary = loc.gzip_vary
        self.http10 = loc.gzip_http_version == "1.0"
        self.proxied = frozenset(loc.gzip_proxied)
        #: searched in User-Agent, case-insensitive (nginx compiles them caseless)
        self.disable = tuple(
            _MSIE6 if r == "msie6" else re.compile(r, re.IGNORECASE) for r in loc.gzip_disable
        )

    # --------------------------------------------------------------- the decision
    def start(self, req: Any, length: int | None, streamed: bool = False) -> Any:
        """Decide for the response on its way (its head is final: the header_filter
        handlers ran); ``length`` is its body's length when known. Sets the response fields
        and returns the encoder of the body (``feed`` flushes, ``end`` finishes), or None.
        A ``streamed`` HEAD gets an encoder that makes nothing (no body goes out)."""
        status = req.status
        if status < 200 or 300 <= status < 400 or status in _NO_COMPRESS:
            return None
        fields = _response_fields(req)
        if fields.get("content-encoding"):
            return None
        ctype = fields.get("content-type")
        if ctype is None:
            ctype = req.content_type
            if ctype is None:
                ctype = req.location.default_type if req.location is not None else "text/plain"
        mime = ctype.partition(";")[0].strip().lower()
        gz = bool(self.gzip_level) and _match(self.gzip_types, mime, length, self.gzip_min)
        br = self.brotli_level is not None and _match(
            self.brotli_types, mime, length, self.brotli_min
        )
        if not (gz or br):
            return None
        lines = b""
        if self.vary:
            vary = fields.get("vary", "").lower()
            if "accept-encoding" not in vary and "*" not in vary:
                lines = b"\r\nVary: Accept-Encoding"
        coding = self._negotiate(req, fields, gz, br)
        if coding is None:
            if lines:
                req.add_header_lines(lines)
            return None
        if coding == "br":
            enc: Any = _Brotli(self.brotli_level)
            lines += b"\r\nContent-Encoding: br"
        else:
            enc = _Gzip(self.gzip_level)
            lines += b"\r\nContent-Encoding: gzip"
        tag = fields.get("etag")
        if (tag is not None and not tag.startswith("W/")) or "accept-ranges" in fields:
            rh = req.resp_headers
            if tag is not None and not tag.startswith("W/"):
                rh["ETag"] = "W/" + tag
            rh.pop("Accept-Ranges", None)
        req.add_header_lines(lines)
        if streamed and req.method == "HEAD":
            return _HEAD
        return enc

    def _negotiate(self, req: Any, fields: dict[str, str], gz: bool, br: bool) -> str | None:
        """The coding the request accepts ("gzip", "br"), or None."""
        if req.http_version == "1.0" and not self.http10:
            return None  # (gzip_http_version is the lowest version served: 1.1 and 2.0 are)
        h = req.headers
        q_gz, q_br = accepted(_joined(h, "accept-encoding"))
        if not gz:
            q_gz = 0.0
        if not br:
            q_br = 0.0
        if q_gz <= 0.0 and q_br <= 0.0:
            return None
        if self.disable:
            agent = h.get("user-agent")
            if agent is not None and any(r.search(agent) for r in self.disable):
                return None
        if "via" in h and not self._proxied_ok(h, fields):
            return None
        return "br" if q_br >= q_gz else "gzip"

    def _proxied_ok(self, h: Any, fields: dict[str, str]) -> bool:
        """``gzip_proxied``: may a response to a request that came through a proxy (``Via``)
        be compressed? Any listed condition suffices; ``off`` refuses. This is what nginx's
        documentation says; its code differs (with ``auth`` alone, a response without
        ``Expires`` and ``Cache-Control`` is compressed even without ``Authorization``)."""
        p = self.proxied
        if "off" in p or not p:
            return False
        if "any" in p:
            return True
        if "auth" in p and "authorization" in h:
            return True
        expires = fields.get("expires")
        if "expired" in p and expires is not None and _expired(expires, fields.get("date")):
            return True
        cc = fields.get("cache-control", "").lower()
        directives = {d.strip().partition("=")[0] for d in cc.split(",")} if cc else set()
        for name in ("no-cache", "no-store", "private"):
            if name in p and name in directives:
                return True
        if "no_last_modified" in p and "last-modified" not in fields:
            return True
        return "no_etag" in p and "etag" not in fields


def _joined(h: Any, name: str) -> str | None:
    values = h.getall(name)
    if not values:
        return None
    return values[0] if len(values) == 1 else ", ".join(values)


def _types(listed: tuple[str, ...]) -> frozenset[str] | None:
    """The MIME types (lower-case, ``text/html`` always), or None for ``"*"`` (any)."""
    if "*" in listed:
        return None
    return frozenset(("text/html", *(t.lower() for t in listed)))


def _match(types: frozenset[str] | None, mime: str, length: int | None, least: int) -> bool:
    return (types is None or mime in types) and (length is None or length >= least)


_WANTED = frozenset(
    (
        "content-type",
        "content-encoding",
        "etag",
        "vary",
        "accept-ranges",
        "cache-control",
        "expires",
        "date",
        "last-modified",
    )
)
_WANTED_RAW = frozenset(n.encode() for n in _WANTED)


def _response_fields(req: Any) -> dict[str, str]:
    """The response fields the decision reads, by lower-case name (repeated ones joined with
    ``,``), read without decoding the others."""
    out: dict[str, str] = {}
    rh = req.resp_fields
    if rh is not None:
        if rh._items is None:  # still as parsed (a proxied response): bytes
            for name, value in rh._pairs():
                lname = name.lower()
                if lname in _WANTED_RAW:
                    key = lname.decode()
                    v = value.decode("latin-1")
                    out[key] = out[key] + ", " + v if key in out else v
        else:
            for lname, _, value in rh._fields():
                if lname in _WANTED:
                    out[lname] = out[lname] + ", " + value if lname in out else value
    return out


# ------------------------------------------------------------------------- the feature
def make_output(loc: Any, app: Any) -> Compression | None:
    """The output filter of ``loc``: a ``Compression`` when gzip or brotli is on."""
    if not (loc.gzip or loc.brotli):
        return None
    return Compression(loc)


def check_scope(scope: Any, path: str, ctx: Context) -> None:
    """The values one scope (``[http]``, a server, a location) sets itself."""
    for key in ("gzip_types", "brotli_types"):
        for i, t in enumerate(getattr(scope, key) or ()):
            if t != "*" and not _MIME_RE.match(t):
                ctx.err(
                    f"{path}.{key}[{i}]",
                    f'invalid MIME type "{t}": expected "type/subtype" or "*"',
                )
    for key, (low, high) in _LEVELS.items():
        level = getattr(scope, key)
        if level is not None and not low <= level <= high:
            ctx.err(f"{path}.{key}", f"invalid level {level}: must be {low}-{high}")
    for i, value in enumerate(scope.gzip_proxied or ()):
        if value not in PROXIED:
            ctx.err(
                f"{path}.gzip_proxied[{i}]",
                f'unknown value "{value}": expected one of {", ".join(PROXIED)}'
                + suggest(value, PROXIED),
            )
    version = scope.gzip_http_version
    if version is not None and version not in ("1.0", "1.1"):
        ctx.err(f"{path}.gzip_http_version", f'invalid version "{version}": "1.0" or "1.1"')
    for i, regex in enumerate(scope.gzip_disable or ()):
        if regex != "msie6":
            try:
                re.compile(regex, re.IGNORECASE)
            except re.error as e:
                ctx.err(f"{path}.gzip_disable[{i}]", f'invalid regex "{regex}": {e}')
    if scope.brotli and brotli is None:
        ctx.err(
            f"{path}.brotli",
            "the brotli package is not installed (pip install 'edgeworker[brotli]')",
        )


def _check(loc: Any, path: str, ctx: Context) -> None:
    """Nothing more per location: the scope checks saw every value where it was set."""


#: The compression feature for ``edgeworker.config``: keys inherited from ``[http]`` and the
#: server (nginx's defaults but ``gzip_vary``, on here).
FEATURE = Feature(
    fields=(),
    check=_check,
    output="edgeworker.compress:make_output",
    inherited=(
        ("gzip", bool, False),
        ("gzip_types", StrList, ("text/html",)),
        ("gzip_min_length", Size, 20),
        ("gzip_comp_level", int, 1),
        ("gzip_proxied", StrList, ("off",)),
        ("gzip_vary", bool, True),
        ("gzip_http_version", str, "1.1"),
        ("gzip_disable", StrList, ()),
        ("brotli", bool, False),
        ("brotli_types", StrList, ("text/html",)),
        ("brotli_comp_level", int, 4),
        ("brotli_min_length", Size, 20),
    ),
    scope_check=check_scope,
)
