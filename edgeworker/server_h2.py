"""HTTP/2 to clients: one connection, one greenlet per stream.

A ``Connection`` (server.py) on a listener with ``http2`` hands itself over here (``serve``)
when ALPN chose ``h2`` or, in cleartext, when the client began with the connection preface.
``H2Server`` then reads frames through the connection's transport (its waits and deadlines are
the transport's), feeds them to the sans-IO ``h2.connection.H2Connection`` (server side, header
validation on) and runs each request stream in its own greenlet, calling
``App.handle(stream, head)`` with an ``H2Stream``: the ``Channel`` of one stream. One writer
greenlet sends every frame, in the order they were made.

The request head is the HTTP/1.1 one: the pseudo-header fields and the fields are put into a
request line and header section that the connection's ``ServerProtocol`` parses, so every rule
and limit of ``edgeworker.http.protocol`` applies as it does to HTTP/1.1 (methods, target,
Host, field names and values, ``max_request_line`` → 414, ``max_header_size``/``max_headers``
→ 431, underscores, the request id). The response fields are those of the HTTP/1.1 head
(``server.response_head``) less the connection-specific ones (RFC 9113 §8.2.2).

Flow control both ways: a stream sends what the client's windows allow and waits for
WINDOW_UPDATE at most ``send_timeout`` (then RST_STREAM CANCEL; a connection whose own window
stayed zero that long is closed); request DATA is acknowledged as the handler reads it, so a
slow handler pushes back on its client, and what is buffered is bounded by the windows
advertised (``STREAM_WINDOW`` per stream, ``CONNECTION_WINDOW`` in all).

Defences (each answered with GOAWAY, ENHANCE_YOUR_CALM unless said otherwise): streams beyond
``http2_max_concurrent_streams`` (RST_STREAM REFUSED_STREAM, the connection stays), a header
block over ``MAX_HEADER_BLOCK`` across CONTINUATION frames, a decoded header list over the
advertised SETTINGS_MAX_HEADER_LIST_SIZE (HPACK bomb), streams reset by the client faster than
they are answered (rapid reset), and floods of SETTINGS, PING, PRIORITY, empty DATA or
WINDOW_UPDATE frames (``FLOOD_FRAMES`` each, plus a share per stream). What waits to be sent is
bounded too (``OUT_HIGH``): streams and the reader wait for the writer past it.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from gevent import get_hub, getcurrent, spawn
from gevent.event import Event
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import DenialOfServiceError, FlowControlError, StreamClosedError
from h2.exceptions import ProtocolError as H2Error
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from hpack import NeverIndexedHeaderTuple

from .errors import BodyError, ClientGone, Drain, EdgeworkerError
from .http.framing import NO_BODY_STATUS as _NO_BODY_STATUS
from .http.protocol import END, ProtocolError, RequestHead, ServerProtocol
from .http.responses import error_response
from .http2 import CALM, CONNECTIONS, RESETS_RECEIVED, STATS, STREAMS, STREAMS_OPEN
from .http2.encode import RequestDecoder, ResponseEncoder
from .server import H2_PREFACE, response_head

if TYPE_CHECKING:  # pragma: no cover
    from .server import Connection

#: SETTINGS_INITIAL_WINDOW_SIZE: what a client may send on one stream before its handler reads
STREAM_WINDOW = 65535
#: the connection's receive window: what all streams of a client may have sent unread
CONNECTION_WINDOW = 1 << 20
#: bytes waiting for the writer past which streams (and the reader) wait for it
OUT_HIGH = 256 * 1024
#: the most a header block may take across HEADERS and CONTINUATION frames, compressed
#: (a block of the largest allowed header list needs far less)
MAX_HEADER_BLOCK = 64 * 1024
#: SETTINGS, PING, PRIORITY, empty DATA frames each allowed per connection, plus
#: ``FLOOD_PER_STREAM`` per stream opened (WINDOW_UPDATE: plus one per 4 KiB sent)
FLOOD_FRAMES = 1000
FLOOD_PER_STREAM = 4
#: streams reset by the client before their response ended, or refused: allowed this many,
#: and beyond, while they are at most half of the streams opened (rapid reset)
RESET_FREE = 128
#: seconds a closing connection reads on after its GOAWAY (``H2Server.linger``)
LINGER = 1.0
#: a file body is read in pieces of this size
_PIECE = 65536
#: fields that never go out on HTTP/2 (RFC 9113 §8.2.2)
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
_STATUS = {code: b"%d" % code for code in range(100, 600)}
#: body bytes made since the last write past which they go to the socket at once (less waits
#: for the end of the loop's turn, with every other frame made in it): a handler that makes
#: many small pieces without yielding still writes (and meets the output bound) as it goes
_FLUSH_NOW = 16384
_H2_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    # ours (``H2Server.request_head``): the HTTP/1.1 rules on every field plus the HTTP/2
    # ones, a malformed request refused on its stream (RST_STREAM PROTOCOL_ERROR)
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,  # ours: built from a validated HTTP/1.1 head
    normalize_outbound_headers=False,
)
#: pseudo-header fields a request may have (``:protocol`` is not: extended CONNECT is not
#: offered)
_PSEUDO = frozenset((b":method", b":path", b":scheme", b":authority"))
#: a field name: lower-case token characters (RFC 9113 §8.2.1, RFC 9110 §5.1)
_NAME_OK = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-z]+").fullmatch
#: a field value: no NUL, CR or LF, no white space first or last (RFC 9113 §8.2.1)
_VALUE_OK = re.compile(rb"(?![ \t])[^\x00\r\n]*(?<![ \t])").fullmatch
#: fields that are malformed in an HTTP/2 request (RFC 9113 §8.2.2; ``te``: but ``trailers``)
_CONNECTION_SPECIFIC = _HOP_BY_HOP


class Malformed(Exception):
    """A malformed request (RFC 9113 §8.1.1): its stream is reset with PROTOCOL_ERROR."""


class _Frames(FrameBuffer):
    """The frame buffer, with the header block bounded across CONTINUATION frames: a block
    over ``MAX_HEADER_BLOCK`` ends the connection as soon as it is seen (``h2`` bounds the
    count of CONTINUATION frames only)."""

    def _update_header_buffer(self, f: Any) -> Any:
        out = super()._update_header_buffer(f)
        pending = self._headers_buffer
        if pending and sum(len(x.data) for x in pending) > MAX_HEADER_BLOCK:
            raise DenialOfServiceError("header block too large")
        return out


class _Settings(Settings):
    """Our SETTINGS: ``h2`` would end the whole connection for a stream over
    MAX_CONCURRENT_STREAMS; the limit is ours instead (RST_STREAM REFUSED_STREAM, nginx's
    answer), so for ``h2`` it is unbounded. The value sent is the configured one."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[SettingCodes.MAX_CONCURRENT_STREAMS] = value


class _Connection(H2Connection):
    """``h2``'s connection, kept open by a graceful GOAWAY (NO_ERROR), sent or received:
    ``h2`` closes its state machine on any GOAWAY, while RFC 9113 §6.8 lets the streams up to
    the last stream id finish (the drain, ``keepalive_requests``, a client done sending)."""

    def close_connection(self, error_code: int = 0, *args: Any, **kw: Any) -> None:
        state = self.state_machine.state
        super().close_connection(error_code, *args, **kw)
        if error_code == ErrorCodes.NO_ERROR and state == ConnectionState.SERVER_OPEN:
            self.state_machine.state = state

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        out = super()._receive_goaway_frame(frame)
        if frame.error_code == ErrorCodes.NO_ERROR and state == ConnectionState.SERVER_OPEN:
            self.state_machine.state = state
        return out


def header_list_size(http: Any) -> int:
    """SETTINGS_MAX_HEADER_LIST_SIZE: the HTTP/1.1 head limits as HPACK counts them (32 bytes
    per field on top of name and value), the request line's pseudo-header fields included. A
    larger list ends the connection (HPACK bomb); within it, the exact HTTP/1.1 limits apply
    (431, 414)."""
    return int(http.max_request_line + http.max_header_size + 32 * (http.max_headers + 4))


def h2_fields(head: bytes, status: int, unique: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """The fields of an HTTP/1.1 response head for HTTP/2: ``:status`` first, names in lower
    case, the connection-specific fields left out. ``unique``: the name of a field whose value
    never repeats (the request id): sent without entering the HPACK table, where it would only
    push out the fields that do repeat."""
    fields = [(b":status", _STATUS.get(status) or b"%d" % status)]
    append = fields.append
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b": ")
            name = name.lower()
            if name == unique:
                append(NeverIndexedHeaderTuple(name, value))
            elif name not in _HOP_BY_HOP:
                append((name, value))
    return fields


def serve(conn: Connection, first: bytes) -> None:
    """Serve ``conn`` as HTTP/2 until it closes (``first``: what was read of it already)."""
    H2Server(conn).serve(first)


class H2Server:
    """One HTTP/2 client connection (see the module docstring)."""

    def __init__(self, conn: Connection) -> None:
        app = conn.app
        self.conn = conn
        self.app = app
        self.http = http = app.http
        self.io = conn.io
        self.log = app.log
        route = app.router.table_for((conn.server_addr, conn.server_port)).default
        self.max_streams = int(getattr(route.server, "http2_max_concurrent_streams", 128))
        h2 = self.h2 = _Connection(config=_H2_CONFIG)
        h2.encoder = ResponseEncoder()
        h2.decoder = RequestDecoder()
        h2.incoming_buffer = _Frames(server=True)
        h2.incoming_buffer.max_frame_size = h2.max_inbound_frame_size
        size = header_list_size(http)
        h2.local_settings = _Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: size,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        h2.decoder.max_header_list_size = size
        self.proto = ServerProtocol(app.limits, app.rid_field, app.underscores)
        self.streams: dict[int, H2Stream] = {}
        self.opened = 0  # streams opened (``$connection_requests``)
        self.resets = 0  # streams the client reset before their response ended
        self.floods = [0] * 5  # SETTINGS, PING, PRIORITY, empty DATA, WINDOW_UPDATE
        self.sent = 0  # body bytes sent
        self.goaway = False  # GOAWAY sent: no new stream, close once the open ones end
        self.dead = False  # the connection is gone: every send fails
        self.out: list[bytes] = []
        self.out_len = 0
        self.drained = Event()  # the writer is below OUT_HIGH
        self.drained.set()
        self.writer: Any = None  # the writer greenlet, while bytes wait for the socket
        self.flushing = False  # a flush waits for the end of the loop's turn
        self.unflushed = 0  # body bytes made since the last write
        self.eof = False  # the client closed its side
        self.reading = False  # the read loop waits for the client (``wake_reader``)
        self.last_active = time.monotonic()  # when the last stream ended

    # ------------------------------------------------------------------ sending
    def flush(self) -> None:
        """Send what ``h2`` produced, at the end of this turn of the loop: the frames every
        stream and the reader make in one turn go out in one write (``flush_now``)."""
        if not self.flushing and not self.dead:
            self.flushing = True
            get_hub().loop.run_callback(self._flush_turn)

    def _flush_turn(self) -> None:
        self.flushing = False
        try:
            self.flush_now()
        except Exception:  # (in the hub: a bug of ours must not stop the loop)
            self.log.exception(
                "unexpected error on HTTP/2 connection from %s", self.conn.remote_addr
            )
            self.close_now()

    def flush_now(self) -> None:
        """Send what ``h2`` produced: to the socket at once when nothing waits before it and
        the socket takes it all (no switch), else after what waits, by the writer."""
        self.unflushed = 0
        data = self.h2.data_to_send()
        if not data or self.dead:
            return
        if not self.out:  # (and so no writer: it runs while ``out`` holds bytes)
            try:
                sent = self.io.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close_now()
                return
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
            # (a TLS write that could not go out whole is written again with these same
            # bytes first: see edgeworker.io.BIOTLS.write)
        self.out.append(data)
        self.out_len += len(data)
        if self.out_len > OUT_HIGH:
            self.drained.clear()
        if self.writer is None:
            self.writer = spawn(self._write)

    def wait_drained(self) -> None:
        """Wait (at most ``send_timeout``) while too much waits for the writer."""
        while self.out_len > OUT_HIGH and not self.dead:
            if not self.drained.wait(self.http.send_timeout):
                self.close_now()
        if self.dead:
            raise ClientGone()

    def _write(self) -> None:
        """The writer greenlet, while the socket does not take what ``flush`` has: sends what
        waits, in order, each wait for the client bounded by send_timeout; ends when nothing
        is left (or the connection is dead)."""
        io = self.io
        out = self.out
        timeout = self.http.send_timeout
        try:
            while out and not self.dead:
                data = b"".join(out) if len(out) > 1 else out[0]
                out.clear()
                try:
                    io.sendall(data, timeout)
                except OSError:  # gone, or did not read for send_timeout
                    self.close_now()
                    return
                self.out_len -= len(data)
                if self.out_len <= OUT_HIGH:
                    self.drained.set()
        finally:
            self.writer = None

    def close_now(self) -> None:
        """The connection is over: wake everything waiting, every later send fails."""
        if self.dead:
            return
        self.dead = True
        self.out.clear()
        self.out_len = 0
        self.drained.set()
        for stream in list(self.streams.values()):
            stream.wake()
        self.wake_reader()  # out of its read: the loop sees ``dead``

    def wake_reader(self) -> None:
        """Interrupt the read loop's wait for the client (``Drain``), when it waits."""
        reader = self.conn.greenlet
        if self.reading and reader is not None and reader is not getcurrent():
            reader.kill(Drain, block=False)

    def send_goaway(self, code: int = ErrorCodes.NO_ERROR) -> None:
        if self.dead:
            return
        if not self.goaway or code != ErrorCodes.NO_ERROR:
            self.goaway = True
            self.h2.close_connection(code, last_stream_id=self.h2.highest_inbound_stream_id)
            self.flush()

    def calm(self, why: str) -> None:
        """GOAWAY ENHANCE_YOUR_CALM: the client abuses the protocol; the connection closes."""
        self.log.info("HTTP/2 client %s: %s: closing the connection", self.conn.remote_addr, why)
        STATS[CALM] += 1
        self.send_goaway(ErrorCodes.ENHANCE_YOUR_CALM)
        self.finish_writing()

    def finish_writing(self) -> None:
        """Send what waits (GOAWAY last), at most send_timeout, then the connection is dead."""
        self.flush_now()
        writer = self.writer
        if writer is not None and not self.dead:
            deadline = time.monotonic() + self.http.send_timeout
            while writer is not getcurrent() and not writer.dead:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    writer.join(left)
                except Drain:  # (a wake-up meant for the read loop, come late)
                    continue
        self.close_now()

    # ------------------------------------------------------------------ reading
    def serve(self, first: bytes) -> None:
        conn = self.conn
        http = self.http
        h2 = self.h2
        STATS[CONNECTIONS] += 1
        h2.initiate_connection()
        # the connection's own window (65535 at first) grows to CONNECTION_WINDOW
        h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()
        read = self.io.read
        deadline = time.monotonic() + http.client_header_timeout  # for the preface
        preface = len(H2_PREFACE)
        try:
            if first:
                preface -= min(preface, len(first))
                self.feed(first)
            while not self.dead:
                if self.goaway and not self.streams:
                    break
                if preface:
                    timeout = max(0.0, deadline - time.monotonic())
                elif self.streams:  # (each stream waits with its own deadlines)
                    timeout = http.keepalive_timeout
                elif conn.closing:
                    timeout = 1.0
                else:  # keepalive_timeout from the end of the last stream
                    timeout = max(0.0, self.last_active + http.keepalive_timeout - time.monotonic())
                try:
                    if self.out_len > OUT_HIGH:
                        self.wait_drained()  # no more frames in while the client reads none
                    self.reading = True
                    try:
                        data = read(timeout)
                    finally:
                        self.reading = False
                except Drain:  # the worker is exiting (or a stream ended the connection)
                    conn.closing = True
                    self.send_goaway()
                    continue
                except TimeoutError:
                    if self.streams or (
                        not preface and time.monotonic() - self.last_active < http.keepalive_timeout
                    ):
                        continue  # (a stream ended during the wait: idle for less)
                    if not preface:
                        self.send_goaway()
                    break
                except OSError:
                    break
                if not data:
                    self.eof = True
                    break
                if preface:
                    preface -= min(preface, len(data))
                self.feed(data)
                if conn.closing and not self.goaway:
                    self.send_goaway()
        except ClientGone:
            pass
        except Exception:  # a bug of ours: never take the worker down
            self.log.exception("unexpected error on HTTP/2 connection from %s", conn.remote_addr)
        finally:
            self.finish_writing()
            if self.goaway and not self.eof:
                self.linger()
            # the handlers still running end (their sends fail): then the connection is done
            for stream in list(self.streams.values()):
                while stream.greenlet is not None and not stream.greenlet.dead:
                    try:
                        stream.greenlet.join()
                    except Drain:  # (the worker is exiting: the stream still ends first)
                        continue
            conn.close()

    def linger(self) -> None:
        """After our GOAWAY, while the client may still be sending: shut our side and read
        what comes (at most ``LINGER`` seconds, 1 MiB) before closing, so that closing does
        not reset the connection before the client read the GOAWAY (nginx's lingering
        close)."""
        try:
            self.io.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + LINGER
        got = 0
        while got < 1 << 20:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                data = self.io.read(left)
            except Drain:  # (a wake-up meant for the read loop, come late)
                continue
            except OSError:
                return
            if not data:
                return
            got += len(data)

    def feed(self, data: bytes) -> None:
        """What the client sent, through ``h2``, into the streams."""
        h2 = self.h2
        try:
            events = h2.receive_data(data)
        except DenialOfServiceError as exc:
            # (h2 queued GOAWAY ENHANCE_YOUR_CALM: an oversized header block or list)
            STATS[CALM] += 1
            self.log.info("HTTP/2 client %s: %s", self.conn.remote_addr, exc)
            self.goaway = True
            self.flush()
            self.finish_writing()
            return
        except H2Error as exc:  # h2 queued GOAWAY with the error's code
            self.log.info("HTTP/2 protocol error from %s: %s", self.conn.remote_addr, exc)
            self.goaway = True
            self.flush()
            self.finish_writing()
            return
        floods = self.floods
        for ev in events:
            cls = ev.__class__
            if cls is RequestReceived:
                self.open_stream(ev)
            elif cls is DataReceived:
                stream = self.streams.get(ev.stream_id)
                if stream is not None and stream.taking:
                    stream.arrived(ev.data, ev.flow_controlled_length)
                elif ev.flow_controlled_length:
                    self._ack(ev.flow_controlled_length, ev.stream_id)
                if not ev.data and not ev.stream_ended:
                    floods[3] += 1
            elif cls is StreamEnded:
                stream = self.streams.get(ev.stream_id)
                if stream is not None:
                    stream.body_done = True
                    stream.wake()
            elif cls is WindowUpdated:
                floods[4] += 1
                if ev.stream_id == 0:
                    for stream in self.streams.values():
                        stream.window.set()
                else:
                    stream = self.streams.get(ev.stream_id)
                    if stream is not None:
                        stream.window.set()
            elif cls is StreamReset:
                stream = self.streams.get(ev.stream_id)
                if stream is not None:
                    stream.reset = True
                    stream.wake()
                    if ev.remote_reset and not stream.ended:
                        self.resets += 1
                        STATS[RESETS_RECEIVED] += 1
            elif cls is RemoteSettingsChanged:
                floods[0] += 1
                for stream in self.streams.values():
                    stream.window.set()
            elif cls is PingReceived:
                floods[1] += 1
            elif cls is PriorityUpdated:
                floods[2] += 1
            elif cls is ConnectionTerminated:  # the client's GOAWAY
                self.goaway = True
        self.flush()
        self._check_abuse()

    def _check_abuse(self) -> None:
        floods = self.floods
        allowed = FLOOD_FRAMES + FLOOD_PER_STREAM * self.opened
        for i, name in enumerate(("SETTINGS", "PING", "PRIORITY", "empty DATA")):
            if floods[i] > allowed:
                return self.calm(f"{name} flood ({floods[i]} frames)")
        if floods[4] > allowed + (self.sent >> 12):
            return self.calm(f"WINDOW_UPDATE flood ({floods[4]} frames)")
        if self.resets > RESET_FREE and self.resets * 2 > self.opened:
            return self.calm(f"rapid reset ({self.resets} of {self.opened} streams)")
        return None

    def _ack(self, size: int, stream_id: int) -> None:
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except (H2Error, ValueError):
            pass

    def open_stream(self, ev: RequestReceived) -> None:
        sid = ev.stream_id
        h2 = self.h2
        self.opened += 1
        STATS[STREAMS] += 1
        if self.goaway or self.dead or len(self.streams) >= self.max_streams:
            # (counted with the client's resets: a client that honours SETTINGS meets this
            # only before they arrive)
            self.resets += 1
            try:
                h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            except (H2Error, StreamClosedError):
                pass  # (already reset by the client)
            return
        try:
            head = self.request_head(ev.headers, ev.stream_ended)
        except Malformed as exc:
            self.log.info(
                "HTTP/2 client %s sent a malformed request: %s", self.conn.remote_addr, exc
            )
            self.resets += 1  # (as a refused stream: it costs the client nothing)
            try:
                h2.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            except (H2Error, StreamClosedError):
                pass  # (already reset by the client)
            if self.opened >= self.http.keepalive_requests:
                self.send_goaway()
            return
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        STATS[STREAMS_OPEN] += 1
        if self.opened >= self.http.keepalive_requests:
            self.send_goaway()  # the last stream of this connection (keepalive_requests)
        stream.greenlet = spawn(self.run, stream, head)

    def request_head(self, headers: list, ended: bool) -> Any:
        """The ``RequestHead`` of a stream's fields (the HTTP/1.1 rules and limits, see the
        module docstring), or the ``ProtocolError`` to answer; ``Malformed`` when the fields
        break the HTTP/2 rules (RFC 9113 §8.2, §8.3): a name not in lower-case token
        characters, a value with NUL, CR or LF or white space around it, a
        connection-specific field, ``te`` but ``trailers``, pseudo-header fields unknown,
        repeated, after a field or missing, ``Host`` other than ``:authority``. ``cookie``
        fields are joined with ``; `` (RFC 9113 §8.2.3)."""
        pseudo: dict[bytes, bytes] = {}
        lines = []
        cookies = None
        host = None
        length = None
        regular = False  # a field came (pseudo-header fields go first)
        name_ok = _NAME_OK
        value_ok = _VALUE_OK
        for name, value in headers:
            if value and value_ok(value) is None:
                raise Malformed(f"invalid value of {name[:64]!r}")
            if name[:1] == b":":
                if regular:
                    raise Malformed(f"{name[:64]!r} after a field")
                if name not in _PSEUDO or name in pseudo:
                    raise Malformed(f"unknown or repeated {name[:64]!r}")
                pseudo[name] = value
                continue
            regular = True
            if name_ok(name) is None:
                raise Malformed(f"invalid field name {name[:64]!r}")
            if name == b"content-length":
                if length is not None and value != length:
                    return ProtocolError(400, "conflicting Content-Length")
                length = value
            elif name == b"cookie":
                if cookies is None:
                    cookies = [value]
                else:
                    cookies.append(value)
            elif name in _CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
                raise Malformed(f"connection-specific field {name!r}")
            else:
                if name == b"host":
                    if host is not None:
                        raise Malformed("more than one host")
                    host = value
                lines.append(b"%b: %b\r\n" % (name, value))
        method = pseudo.get(b":method")
        path = pseudo.get(b":path", b"")
        authority = pseudo.get(b":authority")
        if method is None:
            raise Malformed("no :method")
        if method == b"CONNECT":
            if b":scheme" in pseudo or b":path" in pseudo:
                raise Malformed("CONNECT with :scheme or :path")
        elif b":scheme" not in pseudo or not path:
            raise Malformed("no :scheme or :path")
        if authority is not None and host is not None and authority != host:
            raise Malformed(":authority and host differ")
        if cookies is not None:
            lines.append(b"cookie: %b\r\n" % b"; ".join(cookies))
        if path[:1] != b"/" and path != b"*":
            return ProtocolError(400, "invalid :path")
        if length is not None and not length.isdigit():
            return ProtocolError(400, "invalid Content-Length")
        if authority and host is None:
            lines.insert(0, b"host: %b\r\n" % authority)
        raw = b"%b %b HTTP/1.1\r\n%b\r\n" % (method, path, b"".join(lines))
        proto = self.proto
        events = proto.feed(raw)
        if not events or events[0].__class__ is not RequestHead or events[-1] is not END:
            self.proto = ServerProtocol(self.app.limits, self.app.rid_field, self.app.underscores)
            for ev in events:
                if ev.__class__ is ProtocolError:
                    return ev
            return ProtocolError(400, "invalid request")
        head = events[0]
        head.version = "2.0"
        head.keep_alive = True
        if length is not None:
            head.content_length = int(length)
            head.size += int(length)
        head.chunked = length is None and not ended  # a body of unknown length comes
        return head

    def run(self, stream: H2Stream, head: Any) -> None:
        """A stream's greenlet: the request through the pipeline, then the stream closed."""
        try:
            if stream.reset:
                pass  # reset by the client before it ran: nothing to do (rapid reset)
            elif head.__class__ is ProtocolError:
                stream.send_error(head.status)
            else:
                self.app.handle(stream, head)
        except ClientGone:
            pass
        except Exception:  # a bug of ours: never take the worker down
            self.log.exception("unexpected error on HTTP/2 stream from %s", self.conn.remote_addr)
        finally:
            self.end_stream(stream)

    def end_stream(self, stream: H2Stream) -> None:
        sid = stream.sid
        h2 = self.h2
        stream.taking = False
        if stream.unacked:  # unread body: its window goes back to the connection
            self._ack(stream.unacked, sid)
            stream.unacked = 0
        if not self.dead and not stream.reset:
            try:
                if not stream.ended:  # the response was cut (a failure): the client must know
                    h2.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
                elif not stream.body_done:  # a body still coming that nobody reads (nginx)
                    h2.reset_stream(sid, ErrorCodes.NO_ERROR)
            except (H2Error, StreamClosedError):
                pass
            self.flush()
        self.streams.pop(sid, None)
        STATS[STREAMS_OPEN] -= 1
        self.last_active = time.monotonic()
        if not self.streams:
            if self.goaway and not self.dead:
                self.wake_reader()  # the last stream after GOAWAY: the connection closes


class H2Stream:
    """One request stream: the ``Channel`` its request sees (edgeworker.http.channel)."""

    __slots__ = (
        "server",
        "sid",
        "requests",
        "bin_addr",
        "greenlet",
        "body",
        "body_done",
        "unacked",
        "taking",
        "event",
        "window",
        "reset",
        "ended",
        "remaining",
    )

    closing = False  # (read by response_head: a stream never announces a close)

    def __init__(self, server: H2Server, sid: int) -> None:
        self.server = server
        self.sid = sid
        self.requests = server.opened
        self.bin_addr: bytes | None = None
        self.greenlet: Any = None
        self.body: deque = deque()  # (data, flow-controlled length) as they arrive
        self.body_done = False
        self.unacked = 0  # flow-controlled bytes received, not yet read
        self.taking = True  # DATA goes to ``body`` (else it is acknowledged at once)
        self.event = Event()  # body arrived, or the stream ended
        self.window = Event()  # the client's window may have grown
        self.reset = False
        self.ended = False  # END_STREAM sent
        self.remaining: int | None = None  # body bytes still owed after send_head

    # -- the connection's attributes, as a request sees them
    @property
    def remote_addr(self) -> str:
        return self.server.conn.remote_addr

    @property
    def remote_port(self) -> int:
        return self.server.conn.remote_port

    @property
    def server_addr(self) -> str:
        return self.server.conn.server_addr

    @property
    def server_port(self) -> int:
        return self.server.conn.server_port

    @property
    def names(self) -> Any:
        return self.server.conn.names

    @names.setter
    def names(self, value: Any) -> None:
        self.server.conn.names = value

    @property
    def route(self) -> Any:
        return self.server.conn.route

    @route.setter
    def route(self, value: Any) -> None:
        self.server.conn.route = value

    @property
    def scheme(self) -> str:
        return self.server.conn.scheme

    @property
    def tls(self) -> Any:
        return self.server.conn.tls

    @property
    def binary_remote_addr(self) -> bytes:
        return self.server.conn.binary_remote_addr

    def wake(self) -> None:
        self.event.set()
        self.window.set()

    # ------------------------------------------------------------------ request body
    def arrived(self, data: bytes, size: int) -> None:
        self.body.append((data, size))
        self.unacked += size
        self.event.set()

    def _next_piece(self, timeout: float) -> bytes | None:
        """The next piece of the body (None at its end), acknowledged as it is taken."""
        server = self.server
        body = self.body
        while not body:
            if self.body_done:
                return None
            if self.reset or server.dead:
                raise ClientGone()
            self.event.clear()
            if not self.event.wait(timeout) and not body and not self.body_done:
                raise BodyError(408)
        data, size = body.popleft()
        if size:
            self.unacked -= size
            server._ack(size, self.sid)
            server.flush()
        return data

    def read_body(self, req: Any) -> bytes:
        return b"".join(self.iter_body(req))

    def iter_body(self, req: Any) -> Any:
        """As ``Connection.iter_body``: 413 past ``client_max_body_size``, 408 past
        ``client_body_timeout`` between two pieces; ``100 Continue`` when asked for."""
        head = req.head
        limit = req.location.client_max_body_size if req.location is not None else 0
        if head.content_length is not None and limit and head.content_length > limit:
            req.exit(413)
        if not head.content_length and not head.chunked:
            return
        if head.expect_continue and not req.headers_sent:
            head.expect_continue = False
            self.server.h2.send_headers(self.sid, [(b":status", b"100")])
            self.server.flush()
        timeout = self.server.http.client_body_timeout
        total = 0
        try:
            while True:
                piece = self._next_piece(timeout)
                if piece is None:
                    break
                total += len(piece)
                if limit and total > limit:
                    req.exit(413)
                if piece:
                    yield piece
        except BodyError as err:
            req.exit(err.status)
        if head.content_length is not None and total != head.content_length:
            req.exit(400)  # (h2 ends such a stream itself; this is a last check)
        head.content_length = None
        head.chunked = False  # the body is consumed

    def detach(self, req: Any) -> Any:
        raise EdgeworkerError(
            "req.detach(): an HTTP/2 stream cannot be taken over (upgrades are HTTP/1.1 only)"
        )

    # ------------------------------------------------------------------ response
    def _fields(self, req: Any, length: int | None) -> list[tuple[bytes, bytes]]:
        """The response fields: the HTTP/1.1 head's, less the connection-specific ones."""
        return h2_fields(response_head(self, req, length), req.status, self.server.app.rid_field)

    def _headers(self, fields: list, end: bool) -> None:
        server = self.server
        if server.dead or self.reset:
            raise ClientGone()
        try:
            server.h2.send_headers(self.sid, fields, end_stream=end)
        except (H2Error, StreamClosedError):
            raise ClientGone() from None
        if end:
            self.ended = True
        server.flush()

    def _data(self, data: bytes, end: bool) -> None:
        """Send ``data`` (END_STREAM with it when ``end``) as the client's windows allow."""
        server = self.server
        h2 = server.h2
        sid = self.sid
        pos = 0
        n = len(data)
        while True:
            if server.dead or self.reset:
                raise ClientGone()
            left = n - pos
            try:
                if left == 0:
                    if end:
                        h2.end_stream(sid)
                        self.ended = True
                        server.flush()
                    return
                window = h2.local_flow_control_window(sid)
                size = min(window, h2.max_outbound_frame_size, left)
                if size <= 0:
                    self._wait_window()
                    continue
                last = end and size == left
                h2.send_data(sid, data[pos : pos + size], end_stream=last)
            except (StreamClosedError, FlowControlError, H2Error):
                raise ClientGone() from None
            pos += size
            server.sent += size
            if last:
                self.ended = True
            server.unflushed += size
            if server.unflushed >= _FLUSH_NOW:
                server.flush_now()
            else:
                server.flush()
            if server.out_len > OUT_HIGH:
                server.wait_drained()
            if last:
                return

    def _wait_window(self) -> None:
        """Wait for WINDOW_UPDATE, at most ``send_timeout``: then the stream is reset, and
        the connection closed when its own window is the one that stayed shut."""
        server = self.server
        self.window.clear()
        if self.window.wait(server.http.send_timeout) or server.dead or self.reset:
            return
        if server.h2.outbound_flow_control_window <= 0:
            server.log.info(
                "HTTP/2 client %s kept its window shut for send_timeout: closing",
                server.conn.remote_addr,
            )
            server.calm("window shut for send_timeout")
        else:
            self.reset = True
            server.h2.reset_stream(self.sid, ErrorCodes.CANCEL)
            server.flush()
        raise ClientGone()

    def send_response(self, req: Any, body: bytes) -> None:
        status = req.status
        if status < 200 or status in _NO_BODY_STATUS:
            body = b""
        n = len(body)
        fields = self._fields(req, n)
        req.headers_sent = True
        if req.method == "HEAD" or not n:
            self._headers(fields, True)
            return
        self._headers(fields, False)
        self._data(body, True)
        req.body_bytes_sent = n

    def send_head(self, req: Any, length: int, first: bytes = b"") -> None:
        fields = self._fields(req, length)
        req.headers_sent = True
        if req.method == "HEAD" or not length or req.status in _NO_BODY_STATUS:
            self._headers(fields, True)
            return
        self._headers(fields, False)
        self.remaining = length
        if first:
            self.send_body(req, first)

    def send_body(self, req: Any, data: bytes) -> None:
        if not data or req.method == "HEAD" or req.ended or self.ended:
            return
        remaining = self.remaining
        if remaining is not None:
            data = data[:remaining]
            self.remaining = remaining = remaining - len(data)
        self._data(data, remaining == 0)
        req.body_bytes_sent += len(data)

    def sendfile(self, req: Any, fd: int, offset: int, count: int) -> None:
        """The file's bytes, read in pieces (no zero-copy through HTTP/2 framing)."""
        if req.method == "HEAD" or req.ended or self.ended:
            return
        while count > 0:
            piece = os.pread(fd, min(count, _PIECE), offset)
            if not piece:
                break  # the file shrank under us
            self.send_body(req, piece)
            offset += len(piece)
            count -= len(piece)

    def stream_head(self, req: Any) -> bytes:
        head = response_head(self, req, None)
        req.headers_sent = True
        return head

    def stream(self, req: Any, data: bytes, eof: bool, head: bytes | None = None) -> None:
        if req.ended or self.ended:
            return
        head_only = req.method == "HEAD" or req.status in _NO_BODY_STATUS
        if head is not None or not req.headers_sent:
            if head is None:
                fields = self._fields(req, None)
                req.headers_sent = True
            else:
                fields = h2_fields(head, req.status, self.server.app.rid_field)
            self._headers(fields, eof and (head_only or not data))
        if eof:
            req.ended = True
        if head_only:
            if eof and not self.ended:
                self._data(b"", True)
            return
        if data or (eof and not self.ended):
            self._data(data, eof)
            req.body_bytes_sent += len(data)

    def send_raw(self, data: bytes) -> None:
        raise EdgeworkerError("raw bytes cannot be sent on an HTTP/2 stream")

    def send_error(self, status: int) -> None:
        """A protocol-level error (an invalid request head): the status and its page."""
        head, _, body = error_response(status, keep_alive=False).partition(b"\r\n\r\n")
        fields = h2_fields(head, status)
        try:
            if body:
                self._headers(fields, False)
                self._data(body, True)
            else:
                self._headers(fields, True)
        except ClientGone:
            pass


__all__ = ["H2Server", "H2Stream", "h2_fields", "header_list_size", "serve"]
