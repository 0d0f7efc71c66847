"""The ``proxy_pass`` content handler.

``ProxyHandler(req)`` builds the upstream request (nginx's URI rules, forwarding headers,
hop-by-hop headers stripped, framing rebuilt), picks a peer, sends, and relays the response
(streamed; header_filter/body_filter apply), retrying the next peer when nginx would. See
docs/proxy.md for every rule; the module docstrings of ``balancer``, ``pool`` and ``client``
for the parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

from ..http.fields import HOP_BY_HOP, ResponseFields
from ..http.framing import split_tokens
from ..http.headers import Headers
from ..io import relay
from ..uri import BadURI, normalize_path, plain_paths
from .balancer import Group, Peer
from .client import ProxyResponse, Response, UpConn, UpstreamError, UpstreamTimeout, connect
from .output import finish, send_body, send_head
from .resolver import ResolveError, address_text

log = logging.getLogger("edgeworker")

try:  # the status page's counters (no-ops outside a worker)
    from ..status import metrics as _metrics
except ImportError:  # pragma: no cover - a build without the status package

    class _metrics:  # type: ignore[no-redef]
        @staticmethod
        def upstream_done(*args: Any) -> None:
            pass

        @staticmethod
        def upstream_state(*args: Any, **kw: Any) -> None:
            pass

#: request bodies up to this size are read before connecting, sent with the head in one write,
#: and can be replayed on the next peer; larger ones are streamed (and never retried)
BODY_BUFFER = 65536
#: responses whose whole body arrived with the head (up to this size) go out in one write
_SMALL = 65536

# never forwarded upstream (rebuilt by us or hop-by-hop)
_REQ_DROP = frozenset((
    b"host", b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"content-length", b"expect", b"x-real-ip", b"x-forwarded-proto", b"x-forwarded-for",
))
# request Connection values naming only keep-alive (a dropped field): nothing more to drop
_KEEP_ALIVE = frozenset((b"keep-alive", b"Keep-Alive"))
# Connection values that name no other field
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"upgrade"))
# methods whose empty body is sent without a Content-Length (nginx)
_NO_LENGTH = frozenset(("GET", "HEAD", "DELETE", "OPTIONS"))
# nginx: these are not retried once the request was sent (proxy_next_upstream non_idempotent)
NON_IDEMPOTENT = frozenset(("POST", "LOCK", "PATCH"))
# statuses that count against max_fails when proxy_next_upstream names them (nginx)
_FAILURE_STATUSES = frozenset((500, 502, 503, 504, 429))
_SAFE = b"/:@!$&'()*+,;=-._~"


class _NoLiveUpstreams(UpstreamError):
    pass


def upstream_head(method: str, target: bytes, fixed: bytes, raw: list[tuple[bytes, bytes]],
                  drop: frozenset[bytes], add_xff: bool, lines: tuple[bytes, bytes, bytes],
                  tail: bytes, lowered: bool = False) -> bytes:
    """The upstream request head: ``method target HTTP/1.1``, the location's ``fixed`` lines,
    the client's fields (``raw``) but those whose lower-cased name is in ``drop`` or is named
    by a ``Connection`` field (hop-by-hop), then the forwarding lines (``lines`` of
    ``ProxyHandler._lines_for``; with ``add_xff``, a client ``X-Forwarded-For`` is kept in
    front of the address), then ``tail`` (which ends the head). ``lowered``: every name in
    ``raw`` is lower-case already (the request's fields as parsed), none is lowered again."""
    parts = [method.encode(), b" ", target, b" HTTP/1.1\r\n", fixed]
    tokens: set[bytes] | None = None
    xff: list[bytes] | None = None
    for name, value in raw:
        lname = name if lowered else name.lower()
        if lname not in drop:
            parts += name, b": ", value, b"\r\n"
        elif lname == b"connection":
            if value not in _KEEP_ALIVE:  # (names only keep-alive, which is dropped anyway)
                if tokens is None:
                    tokens = set()
                tokens.update(split_tokens(value))
        elif lname == b"x-forwarded-for" and add_xff:
            if xff is None:
                xff = []
            xff.append(value)
    if tokens is not None and not tokens <= drop:
        # fields named by Connection are hop-by-hop too (a name is compared up to a colon)
        del parts[5:]
        for name, value in raw:
            if name.lower() not in drop and name.split(b":", 1)[0].lower() not in tokens:
                parts += name, b": ", value, b"\r\n"
    if xff is None:
        parts.append(lines[1])
    else:  # the client's X-Forwarded-For, then its address
        xff.append(lines[0])
        parts += b"X-Forwarded-For: ", b", ".join(xff), b"\r\n", lines[2]
    parts.append(tail)
    return b"".join(parts)


class ProxyHandler:
    """Content handler for one location's ``proxy_pass``."""

    def __init__(self, group: Group, proxy_host: str, prefix: str | None, match_prefix: str | None,
                 set_headers: dict[str, str], location_path: str = "",
                 next_upstream: tuple[str, ...] = ("error", "timeout"), tries: int = 0,
                 redirects: tuple[tuple[bytes, str], ...] = (),
                 tls: tuple[Any, str] | None = None, next_timeout: float = 0.0) -> None:
        self.group = group
        # proxy_next_upstream_timeout: no new attempt after this many seconds (0: no limit)
        self.next_timeout = next_timeout
        # https:// upstream: (ssl context, name to send and verify; "" = each server's host)
        self.tls = tls
        # proxy_redirect: (prefix of a Location/Refresh URL, its replacement, with $variables)
        self.redirects = redirects
        # proxy_next_upstream: the failure kinds and response statuses after which the next
        # server is tried (nginx), and whether a non-idempotent request may be sent again
        self.retry_kinds = frozenset(t for t in next_upstream if not t.startswith("http_"))
        self.retry_statuses = frozenset(int(t[5:]) for t in next_upstream if t.startswith("http_"))
        self.non_idempotent = "non_idempotent" in next_upstream
        off = "off" in next_upstream
        self.max_tries = 1 if off else min(tries, group.max_tries) if tries else group.max_tries
        self.prefix = prefix  # None: pass the request URI as is
        self.match_prefix = match_prefix  # the location's prefix (None for regex locations)
        self.where = location_path
        fixed: list[bytes] = []
        dynamic: list[tuple[bytes, str]] = []
        own = {name.lower() for name in set_headers}
        if "host" not in own:
            fixed.append(b"Host: " + proxy_host.encode("latin-1") + b"\r\n")
        for name, value in set_headers.items():
            if value == "":
                continue  # nginx: an empty value removes the header
            if "$" in value:
                dynamic.append((name.encode("latin-1"), value))
            else:
                fixed.append(name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n")
        self.fixed = b"".join(fixed)
        self.dynamic = tuple(dynamic)
        self.drop = _REQ_DROP | frozenset(n.encode("latin-1") for n in own)
        self.add_xff = "x-forwarded-for" not in own
        self.add_real_ip = "x-real-ip" not in own
        self.add_proto = "x-forwarded-proto" not in own
        # by (client address, scheme): what _lines_for returns
        self._client_lines: dict[tuple[str, str], tuple[bytes, bytes, bytes]] = {}
        self.keepalive = group.pool.size > 0
        self.ip_hash = group.balance == "ip_hash"
        self.hash_key = group.hash_key if group.balance == "hash" else None

    # ------------------------------------------------------------------ request
    def _target(self, req: Any) -> bytes:
        head = req.head
        uri = req.uri
        changed = False
        try:
            # (a plain path seen before is its own normalized form: no call)
            normal = plain_paths.get(head.path)
            changed = (normal if normal is not None else normalize_path(head.path)) != uri
        except BadURI:  # pragma: no cover - the server rejected such requests already
            changed = True
        if self.prefix is None or changed:
            if not changed:
                target = head.target  # $request_uri, as received
                if target[:1] == b"/":
                    return target
                return head.path + (b"?" + head.query if head.query else b"")
            path = uri
        else:
            mp = self.match_prefix
            path = self.prefix + uri[len(mp):] if mp and uri.startswith(mp) else self.prefix
        target = quote_from_bytes(path.encode("utf-8", "surrogateescape"), _SAFE).encode()
        if req.query_string:
            target += b"?" + req.query_string.encode("latin-1")
        return target

    def _head(self, req: Any, length: int | None, upgrade: bytes | None) -> bytes:
        hdrs = req.parsed_headers
        raw = req.head.headers if hdrs is None else hdrs.raw()
        client = req.remote_addr, req.scheme
        lines = self._client_lines.get(client)
        if lines is None:
            lines = self._lines_for(*client)
        # what follows the fields: $variable headers, Upgrade/Connection, framing, blank line
        if (upgrade is None and length == 0 and self.keepalive and not self.dynamic
                and req.method in _NO_LENGTH):
            tail = b"\r\n"  # (the usual request)
        else:
            tail = self._tail(req, length, upgrade)
        return upstream_head(req.method, self._target(req), self.fixed, raw, self.drop,
                             self.add_xff, lines, tail, hdrs is None)

    def _tail(self, req: Any, length: int | None, upgrade: bytes | None) -> bytes:
        parts = []
        if self.dynamic:
            var = req.var
            for name, template in self.dynamic:
                value = var.expand(template)
                if value and "\r" not in value and "\n" not in value and "\x00" not in value:
                    parts.append(name + b": " + value.encode("latin-1", "replace") + b"\r\n")
        if upgrade is not None:
            parts.append(b"Upgrade: " + upgrade + b"\r\nConnection: upgrade\r\n")
        elif not self.keepalive:
            parts.append(b"Connection: close\r\n")
        if length is not None:
            if length or req.method not in _NO_LENGTH:
                parts.append(b"Content-Length: %d\r\n" % length)
        else:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _lines_for(self, addr: str, scheme: str) -> tuple[bytes, bytes, bytes]:
        """(the address as bytes, the lines a client at ``addr`` adds to a request that has no
        X-Forwarded-For, the same without that line) as this location sends them
        (X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, unless proxy_set_header sets them)."""
        a = addr.encode()
        xff = b"X-Forwarded-For: " + a + b"\r\n" if self.add_xff else b""
        rest = (b"X-Real-IP: " + a + b"\r\n" if self.add_real_ip else b"") + (
            b"X-Forwarded-Proto: " + scheme.encode() + b"\r\n" if self.add_proto else b""
        )
        lines = (a, xff + rest, rest)
        if len(self._client_lines) >= 4096:  # clients come and go: keep the table small
            self._client_lines.clear()
        self._client_lines[addr, scheme] = lines
        return lines

    def _body(self, req: Any) -> tuple[bytes | None, Iterator[bytes] | None, int | None]:
        """(buffered body, rest to stream, Content-Length or None for chunked)."""
        head = req.head
        if req.body is not None:
            return req.body, None, len(req.body)
        if head.content_length is None and not head.chunked:
            return b"", None, 0
        it = req.iter_body()
        pieces: list[bytes] = []
        size = 0
        for piece in it:
            pieces.append(piece)
            size += len(piece)
            if size > BODY_BUFFER:
                return b"".join(pieces), it, head.content_length  # stream the rest
        return b"".join(pieces), None, size

    # ------------------------------------------------------------------ the handler
    def __call__(self, req: Any) -> None:
        group = self.group
        head = req.head
        upgrade = head.upgrade
        if req.body is None and head.content_length is None and not head.chunked:
            body, rest, length = b"", None, 0  # no request body (most requests)
        else:
            body, rest, length = self._body(req)
        replayable = rest is None
        request_head = self._head(req, length, upgrade)
        method = req.method
        if self.ip_hash:
            client = req.binary_remote_addr
        elif self.hash_key is not None:  # balance = "hash": the request's key
            client = req.var.expand(self.hash_key).encode("utf-8", "surrogateescape")
        else:
            client = b""
        tried = 0
        addrs: list[str] = []
        statuses: list[int] = []
        times: list[float] = []
        # $upstream_addr, $upstream_status, $upstream_response_time: read from these lists
        req.upstream = (addrs, statuses, times)
        error: UpstreamError | None = None
        peer: Peer | None = None
        nxt: Peer | None = None  # the next peer, chosen when a response status asked for one
        max_tries = self.max_tries
        started = 0.0
        for attempt in range(max_tries):
            if attempt and self.next_timeout and time.monotonic() - started > self.next_timeout:
                break  # proxy_next_upstream_timeout: the last failure stands
            peer = nxt or group.select(tried, client)
            nxt = None
            if peer is None:
                break
            tried |= 1 << peer.index
            t0 = time.monotonic()
            if not attempt:
                started = t0
            peer.conns += 1
            peer.requests += 1
            addr_text = peer.name
            try:
                fixed = peer.target.fixed
                if fixed is not None:  # an IP address
                    addr, addr_text = fixed
                else:
                    addr = peer.target.next_address()
                    addr_text = _addr_text(addr)
                resp = self._exchange(req, peer, addr, request_head, body, rest, length)
            except ResolveError as exc:
                peer.conns -= 1
                error = UpstreamError(str(exc), sent=False)
            except UpstreamError as exc:
                peer.conns -= 1
                error = exc
            except BaseException:
                peer.conns -= 1
                raise
            else:
                status = resp.status
                if (status in self.retry_statuses and attempt + 1 < max_tries and replayable
                        and (self.non_idempotent or method not in NON_IDEMPOTENT)
                        and not (self.next_timeout
                                 and time.monotonic() - started > self.next_timeout)):
                    nxt = group.select(tried, client)
                    if nxt is not None:  # proxy_next_upstream http_NNN: this answer is dropped
                        self._next_after_status(peer, resp, addr_text, t0, len(request_head))
                        addrs.append(addr_text)
                        statuses.append(status)
                        times.append(time.monotonic() - t0)
                        continue
                if peer.fails and group.succeeded(peer):
                    _metrics.upstream_state(group.name, peer.name, "up")
                addrs.append(addr_text)
                statuses.append(status)
                try:
                    self._relay(req, resp, times, t0)
                finally:
                    peer.conns -= 1
                    resp.release()
                    _metrics.upstream_done(group.name, peer.name, resp.status,
                                           time.monotonic() - t0, len(request_head),
                                           resp.received)
                return None
            # the attempt failed
            self._count_failure(peer)
            _metrics.upstream_done(group.name, peer.name, None, time.monotonic() - t0, 0, 0)
            addrs.append(addr_text)
            statuses.append(error.status)
            times.append(time.monotonic() - t0)
            self._log_error(req, error, addr_text)
            if (error.kind not in self.retry_kinds or not replayable
                    or (error.sent and method in NON_IDEMPOTENT and not self.non_idempotent)):
                break
        if peer is None and not addrs:
            log.error('no live upstreams while connecting to upstream "%s", client: %s, '
                      'request: "%s %s"', group.name, req.remote_addr, method, req.request_uri)
            error = _NoLiveUpstreams("no live upstreams", sent=False)
            addrs.append(group.name)
            statuses.append(502)
            times.append(0.0)
        req.keep_alive = req.keep_alive and replayable
        req.exit(error.status if error is not None else 502)
        return None

    def _count_failure(self, peer: Peer) -> None:
        """One failed attempt against ``peer`` (max_fails); logged when it marks it down."""
        group = self.group
        if group.failed(peer):
            log.warning('upstream server temporarily disabled: "%s" in upstream "%s"',
                        peer.name, group.name)
            _metrics.upstream_state(group.name, peer.name, "down")

    def _next_after_status(self, peer: Peer, resp: Response, addr_text: str, t0: float,
                           sent: int) -> None:
        """A response whose status is in ``proxy_next_upstream``: close its connection (its
        body is not read) and count it as a failure of ``peer`` where nginx does (500, 502, 503,
        504 and 429; never 403 or 404)."""
        group = self.group
        peer.conns -= 1
        resp.conn.close()
        resp.release()
        status = resp.status
        if status in _FAILURE_STATUSES:
            self._count_failure(peer)
        _metrics.upstream_done(group.name, peer.name, status, time.monotonic() - t0, sent,
                               resp.received)
        log.info('upstream "%s" answered %d, trying the next server (proxy_next_upstream)',
                 addr_text, status)

    def _exchange(self, req: Any, peer: Peer, addr: tuple, request_head: bytes,
                  body: bytes | None, rest: Iterator[bytes] | None, length: int | None
                  ) -> Response:
        group = self.group
        tls = self.tls
        if tls is None:
            key = addr
            tls_host = context = None
        else:  # the pool keeps TLS connections apart from plain ones to the same address, and
            # from those checked otherwise (another CA, verification off, another name)
            context, tls_host = tls[0], tls[1] or peer.target.host
            key = (*addr, tls_host, context)
        for attempt in (0, 1):
            conn = group.pool.get(key, req.method in NON_IDEMPOTENT) if attempt == 0 else None
            if conn is None:
                conn = connect(addr, group.connect_timeout, key, tls_host, True, context)
            try:
                if rest is None and length is not None and len(body) <= BODY_BUFFER:
                    # (_send's usual case: the head and a small body in one write)
                    conn.send(request_head + body, group.send_timeout)
                else:
                    self._send(conn, request_head, body, rest, length)
                resp = ProxyResponse(conn, group.read_timeout, req.method == "HEAD")
                resp.read_head()
                return resp
            except UpstreamTimeout:
                conn.close()
                raise
            except UpstreamError:
                conn.close()
                # an idle keep-alive connection the upstream closed just now: one fresh retry,
                # for requests that can be replayed and were not answered at all
                if not conn.reused or rest is not None or req.method in NON_IDEMPOTENT:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, conn: UpConn, request_head: bytes, body: bytes | None,
              rest: Iterator[bytes] | None, length: int | None) -> None:
        """Send a request whose body is large or streamed (``_exchange`` itself sends the
        usual one, the head and a small body in one write)."""
        timeout = self.group.send_timeout
        chunked = length is None
        if rest is None:
            if chunked:  # pragma: no cover - small bodies are always sent with a length
                conn.send(request_head + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body), timeout)
            else:  # a body read whole before (by a handler) larger than BODY_BUFFER
                conn.send(request_head, timeout)
                conn.send(body, timeout)
            return
        # streaming: the buffered start, then the rest as it arrives from the client
        if chunked:
            conn.send(request_head + b"%x\r\n%b\r\n" % (len(body), body), timeout)
            for piece in rest:
                if piece:
                    conn.send(b"%x\r\n%b\r\n" % (len(piece), piece), timeout)
            conn.send(b"0\r\n\r\n", timeout)
        else:
            conn.send(request_head + body, timeout)
            for piece in rest:
                conn.send(piece, timeout)

    # ------------------------------------------------------------------ response
    def _relay(self, req: Any, resp: Response, times: list[float], t0: float) -> None:
        """Relay ``resp`` to the client; ``times`` gets the attempt's time (``t0``: its start)."""
        upconn = resp.conn
        pool = self.group.pool
        status = resp.status
        if status == 101:
            if req.head.upgrade is None:
                upconn.close()
                times.append(time.monotonic() - t0)
                log.error("upstream sent 101 to a request without Upgrade, client: %s",
                          req.remote_addr)
                req.exit(502)
            _tunnel(req, resp, self.group.read_timeout)
            times.append(time.monotonic() - t0)
            return
        if req.head.upgrade is not None:
            req.keep_alive = False  # upgrade declined: do not parse the rest as HTTP
        req.status = status
        fields = resp.fields
        if fields.redirects is not None and self.redirects:
            self._rewrite_redirects(req, fields)
        # the upstream's fields minus the hop-by-hop ones, sorted while the head was parsed
        connection = fields.connection
        kept = None
        if connection is not None and connection.lower() not in _PLAIN_CONNECTION:
            tokens = set(split_tokens(connection))
            if not tokens <= HOP_BY_HOP:  # fields named by Connection are hop-by-hop too
                kept = [f for f in fields.kept if f[0].lower() not in tokens]
        rh = req.resp_fields
        if rh is not None and len(rh):  # headers set before (access phase): upstream's appended
            req.resp_fields = Headers.from_raw(rh.raw() + (fields.kept if kept is None else kept))
        elif kept is None:  # (the usual response: its fields go out as the upstream sent them)
            req.resp_fields = Headers.from_wire(fields.wire, fields.has_ct)
        else:
            req.resp_fields = Headers.from_raw(kept)
        length = resp.length
        head_only = req.method == "HEAD"
        if not resp.done and not head_only and length is not None and length <= _SMALL:
            try:  # a small body that came in a separate packet: still one write to the client
                resp.pending = [resp.read_all(length)]
            except UpstreamError as exc:
                return self._cut(req, resp, exc, times, t0)
        if resp.done or head_only:
            body = b"".join(resp.pending)
            if resp.done and resp.keep_alive and not resp.upgraded:  # (resp.reusable)
                pool.put(upconn)
            else:
                upconn.close()
            times.append(time.monotonic() - t0)
            if head_only and length is not None and not req.location.body_filter:
                send_head(req, length)
            else:
                req.respond(body)
            req.ended = True  # (finish)
            return
        raw = length is not None and not req.location.body_filter
        ok = False
        try:
            if raw:
                send_head(req, length)
                for piece in resp.body():
                    send_body(req, piece)
            else:
                stream = req.stream
                for piece in resp.body():
                    stream(piece, False)
            ok = resp.reusable
        except UpstreamError as exc:
            return self._cut(req, resp, exc, times, t0)
        finally:
            if ok:
                pool.put(upconn)
            else:
                upconn.close()
        times.append(time.monotonic() - t0)
        if raw:
            finish(req)
        else:
            req.stream(b"", True)

    def _rewrite_redirects(self, req: Any, fields: ResponseFields) -> None:
        """proxy_redirect: the first rule whose redirect starts the URL of a ``Location`` (or of
        ``Refresh``'s ``url=``) replaces that part (nginx: a byte-exact prefix)."""
        kept = fields.kept
        for i in fields.redirects or ():
            name, value = kept[i]
            start = 0
            if len(name) == 7:  # Refresh: "5; url=http://…"
                start = value.lower().find(b"url=")
                if start < 0:
                    continue
                start += 4
            url = value[start:]
            for redirect, replacement in self.redirects:
                if url.startswith(redirect):
                    if "$" in replacement:
                        replacement = req.var.expand(replacement)
                    new = value[:start] + replacement.encode("latin-1", "replace") + url[
                        len(redirect):]
                    if b"\r" in new or b"\n" in new or b"\x00" in new:
                        break  # a variable brought a line break: left as the upstream sent it
                    fields.set_kept(i, new)
                    break

    def _cut(self, req: Any, resp: Response, exc: UpstreamError, times: list[float],
             t0: float) -> None:
        """The upstream failed in the middle of the body."""
        resp.conn.close()
        times.append(time.monotonic() - t0)
        self._log_error(req, exc, req.upstream[0][-1], "while reading upstream")
        if not req.headers_sent:
            req.exit(exc.status)
        # the response is cut: close the client connection without completing the body (no
        # last chunk, fewer bytes than Content-Length), so the client sees the truncation
        req.keep_alive = False
        req.ended = True

    def _log_error(self, req: Any, exc: UpstreamError, addr: str,
                   context: str = "") -> None:
        log.error('%s%s, client: %s, request: "%s %s HTTP/%s", upstream: "http://%s"',
                  exc.reason, f" {context}" if context else "", req.remote_addr, req.method,
                  req.request_uri, req.http_version, addr)


_ADDR_TEXT: dict[tuple, str] = {}


def _addr_text(addr: tuple) -> str:
    """``address_text(addr)``, remembered (a name's addresses change only with DNS)."""
    text = _ADDR_TEXT.get(addr)
    if text is None:
        text = address_text(addr)
        if len(_ADDR_TEXT) >= 1024:  # addresses come and go with DNS: keep the cache small
            _ADDR_TEXT.clear()
        _ADDR_TEXT[addr] = text
    return text


# ---------------------------------------------------------------------- upgrade tunnel
def _tunnel(req: Any, resp: Response, idle_timeout: float) -> None:
    """Relay the 101 head, take over the client socket and copy bytes both ways until both
    sides close or nothing moves for ``idle_timeout`` seconds (proxy_read_timeout)."""
    import gevent

    upconn = resp.conn
    lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    for name, value in resp.raw_headers:
        lname = name.lower()
        if lname in (b"content-length", b"transfer-encoding", b"keep-alive"):
            continue
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    req.status = 101
    req.send_raw(b"".join(lines))
    req.headers_sent = True
    req.ended = True
    client, leftover = req.detach()
    upstream = upconn.io.detach()  # (both sockets waited on by gevent itself from here on)
    last = [time.monotonic()]
    sent = [0]
    try:
        back = gevent.spawn(relay, upstream, client, idle_timeout, last, sent, resp.tail)
        relay(client, upstream, idle_timeout, last, None, leftover)
        back.join(timeout=idle_timeout)
        back.kill(block=False)
    finally:
        req.body_bytes_sent = sent[0]
        for sock in (upstream, client):
            try:
                sock.close()
            except OSError:
                pass


__all__ = ["ProxyHandler"]
