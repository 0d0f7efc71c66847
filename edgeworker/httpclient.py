"""``edgeworker.http.request``: a pooled, cooperative HTTP/1.1 client for handler code.

OpenResty's resty.http for edgeworker, on the proxy's client (``edgeworker.proxy.client``)::

    from edgeworker.httpclient import request
    r = request("GET", "http://user-service/users/42", timeout=0.5)
    r.status, r.headers["content-type"], r.body, r.json()

    r = request("POST", "http://api/items", body={"name": "x"})       # dict/list → JSON
    with request("GET", "http://files/big", stream=True) as r:         # body not held whole
        for piece in r:
            ...

Connections are kept alive in per-worker pools (32 idle connections per ``scheme://host:port``,
idle 60 s at most), host names are resolved without blocking and cached 30 s. ``timeout``
(seconds, default 60) bounds the connect, each write and each read (not the whole exchange).
Redirects are not followed. Errors raise ``RequestError`` (refused, reset, invalid response,
bad URL) or ``RequestTimeout`` (also a ``TimeoutError``). ``https://`` URLs use TLS with
certificate verification (``verify``: True, a CA file, or False).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .errors import RequestError, RequestTimeout
from .http.headers import Headers
from .proxy.client import Response, UpConn, UpstreamError, UpstreamTimeout, connect, tls_context
from .proxy.pool import Pool
from .proxy.resolver import ResolveError, Target

__all__ = ["HTTPResponse", "RequestError", "RequestTimeout", "request"]

DEFAULT_TIMEOUT = 60.0
POOL_SIZE = 32
_IDEMPOTENT = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"))
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode


class _State:
    pid = -1
    pools: dict[tuple, Pool] = {}
    targets: dict[tuple, Target] = {}


def _pool(key: tuple) -> Pool:
    if _State.pid != os.getpid():  # per process: a forked worker never reuses the parent's
        _State.pid = os.getpid()
        _State.pools = {}
        _State.targets = {}
    pool = _State.pools.get(key)
    if pool is None:
        pool = _State.pools[key] = Pool(POOL_SIZE)
    return pool


class HTTPResponse:
    """A response: ``status`` (int), ``headers`` (``Headers``, case-insensitive), ``body``
    (bytes; with ``stream=True`` reading it reads the rest), ``text``, ``json()``.

    With ``stream=True`` iterate the response (or ``iter_content()``) for the body pieces;
    ``close()`` (or leaving a ``with`` block) gives the connection back (or closes it when the
    body was not read to its end).
    """

    def __init__(self, resp: Response, pool: Pool, stream: bool) -> None:
        self.status: int = resp.status
        self.headers = Headers(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in resp.raw_headers
        )
        self._resp: Response | None = resp
        self._pool = pool
        self._body: bytes | None = None
        if not stream:
            self._body = self._read_all()

    def _read_all(self) -> bytes:
        return b"".join(self.iter_content())

    def iter_content(self) -> Iterator[bytes]:
        """The body pieces as they arrive (once)."""
        resp = self._resp
        if resp is None:
            if self._body:
                yield self._body
            return
        try:
            yield from resp.body()
        except UpstreamTimeout as exc:
            self._drop()
            raise RequestTimeout(str(exc)) from None
        except UpstreamError as exc:
            self._drop()
            raise RequestError(str(exc)) from None
        except BaseException:
            self._drop()
            raise
        self._release()

    __iter__ = iter_content

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = self._read_all()
        return self._body

    @property
    def text(self) -> str:
        """The body decoded (charset of Content-Type, else UTF-8, invalid bytes replaced)."""
        ctype = self.headers.get("content-type", "")
        charset = "utf-8"
        for part in ctype.split(";")[1:]:
            k, _, v = part.strip().partition("=")
            if k.lower() == "charset" and v:
                charset = v.strip('"')
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded as JSON (``msgspec.DecodeError``, a ``ValueError``, if it is not)."""
        return _json_decode(self.body)

    def _release(self) -> None:
        resp, self._resp = self._resp, None
        if resp is None:
            return
        resp.release()  # the parser <-> response cycle: freed by reference counting
        if resp.reusable:
            self._pool.put(resp.conn)
        else:
            resp.conn.close()

    def _drop(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.release()
            resp.conn.close()

    def close(self) -> None:
        """Give the connection back (closed if the body was not read to its end)."""
        resp = self._resp
        if resp is not None and resp.done:
            self._release()
        else:
            self._drop()

    def __enter__(self) -> HTTPResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HTTPResponse {self.status}>"


def request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | dict | list | None = None,
    timeout: float | None = None,
    stream: bool = False,
    verify: bool | str = True,
) -> HTTPResponse:
    """Send one request and return its response (see the module docstring).

    ``verify`` (``https://`` only, resty.http's ``ssl_verify``): True checks the server's
    certificate against the system's CAs, a path checks it against that PEM file of CAs,
    False checks nothing.

    ``body``: bytes, str (UTF-8) or a dict/list (sent as JSON with
    ``Content-Type: application/json`` unless given). Raises ``RequestError`` /
    ``RequestTimeout``; ``ValueError`` for a header with CR/LF.
    """
    method = method.upper()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(f"unsupported URL {url!r}: expected http:// or https://")
    host = parts.hostname
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise RequestError(f"invalid port in URL {url!r}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    t = DEFAULT_TIMEOUT if timeout is None else float(timeout)

    hdrs = Headers(headers or {})
    if isinstance(body, (dict, list)):
        payload = _json_encode(body)
        if "content-type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = bytes(body) if body is not None else b""
    if "host" not in hdrs:
        shown = f"[{host}]" if ":" in host else host
        default = 443 if scheme == "https" else 80
        hdrs["Host"] = shown if port == default else f"{shown}:{port}"
    for name in ("content-length", "transfer-encoding", "connection"):
        if name in hdrs:
            del hdrs[name]
    if payload or method in ("POST", "PUT", "PATCH"):
        hdrs["Content-Length"] = str(len(payload))
    if "user-agent" not in hdrs:
        hdrs["User-Agent"] = "edgeworker"
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    lines.extend(f"{n}: {v}\r\n" for n, v in hdrs.items())
    lines.append("\r\n")
    data = "".join(lines).encode("latin-1") + payload

    key = (scheme, host, port)
    pool = _pool(key)
    tkey = (host, port)
    target_obj = _State.targets.get(tkey)
    if target_obj is None:
        target_obj = _State.targets[tkey] = Target(host, port)
    try:
        addr = target_obj.next_address()
    except ResolveError as exc:
        raise RequestError(str(exc)) from None
    if scheme == "https":
        tls_host = host
        if not isinstance(verify, (bool, str)):
            raise TypeError("verify must be a bool or the path of a CA file")
        try:
            context = tls_context(verify is not False, verify if isinstance(verify, str) else None)
        except OSError as exc:
            raise RequestError(f"cannot load CA file {verify!r}: {exc.strerror}") from None
        ckey: tuple = (scheme, addr, verify)  # never reuse a connection checked otherwise
    else:
        tls_host = context = None
        ckey = (scheme, addr)
    for attempt in (0, 1):
        conn: UpConn | None = pool.get(ckey, method not in _IDEMPOTENT) if attempt == 0 else None
        try:
            if conn is None:
                conn = connect(addr, t, ckey, tls_host, context=context)
            conn.send(data, t)
            resp = Response(conn, t, head_only=method == "HEAD")
            resp.read_head()
        except UpstreamTimeout as exc:
            if conn is not None:
                conn.close()
            raise RequestTimeout(f"{exc} ({url})") from None
        except UpstreamError as exc:
            if conn is not None:
                conn.close()
            if attempt == 0 and conn is not None and conn.reused and method in _IDEMPOTENT:
                continue  # a pooled connection the server had closed: once more, fresh
            raise RequestError(f"{exc} ({url})") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if resp.status == 101:
            conn.close()
            raise RequestError(f"unexpected 101 Switching Protocols from {url}")
        return HTTPResponse(resp, pool, stream)
    raise AssertionError("unreachable")  # pragma: no cover
