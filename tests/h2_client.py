"""A small HTTP/2 client over a real socket, on the ``h2`` library (client side): for the
HTTP/2 tests, as a well-behaved client and as a hostile one (``raw``: frames as they are).
Every wait is bounded."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

__all__ = ["H2Client", "Response"]


class _Connection(h2.connection.H2Connection):
    """The client side, reading on after a GOAWAY (``h2`` closes its state on it; RFC 9113
    §6.8 lets the streams up to the last stream id finish)."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        out = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return out


class Response:
    """One stream's outcome: ``status`` (int, or None), ``headers`` (dict of str), ``body``,
    ``reset`` (the RST_STREAM error code, or None), ``ended`` (END_STREAM seen)."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.informational: list[int] = []
        self.body = b""
        self.reset: int | None = None
        self.ended = False
        self.done_at = 0.0

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def __repr__(self) -> str:
        return f"<Response {self.status} reset={self.reset} {len(self.body)}B>"


class H2Client:
    """``H2Client(port, tls=None)``: connects (TLS with ALPN ``h2`` when ``tls`` is a client
    ``ssl.SSLContext``) and sends the preface and ``settings`` (h2 SettingCodes -> value).
    ``auto_ack``: acknowledge received DATA (else the client's windows stay shut)."""

    def __init__(
        self,
        port: int,
        tls: ssl.SSLContext | None = None,
        settings: dict | None = None,
        auto_ack: bool = True,
        timeout: float = 10.0,
        preface: bool = True,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.timeout = timeout
        self.auto_ack = auto_ack
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = _Connection(config)
        self.responses: dict[int, Response] = {}
        self.goaway: Any = None  # the ConnectionTerminated event
        self.closed = False
        self.settings_seen = False
        if preface:
            self.h2.initiate_connection()
            if settings:
                self.h2.update_settings(settings)
            self.flush()

    # -- sending
    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def raw(self, data: bytes) -> None:
        """Bytes as they are (frames made by the test)."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def request(
        self,
        path: str,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: str = "localhost",
    ) -> int:
        """Open a stream (its id); ``body`` is sent as the windows allow (``send_body``)."""
        sid = self.h2.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", authority),
            *(headers or []),
        ]
        self.h2.send_headers(sid, fields, end_stream=end and body is None)
        self.responses[sid] = Response()
        self.flush()
        if body is not None:
            self.send_body(sid, body, end)
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True, timeout: float | None = None):
        """Send ``body`` on ``sid`` as the server's windows allow (reading meanwhile)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        view = memoryview(body)
        while True:
            window = self.h2.local_flow_control_window(sid)
            size = min(window, self.h2.max_outbound_frame_size, len(view))
            if size > 0 or not view:
                last = end and size == len(view)
                self.h2.send_data(sid, view[:size].tobytes(), end_stream=last)
                self.flush()
                view = view[size:]
                if not view:
                    return
            else:
                if time.monotonic() > deadline:
                    raise TimeoutError("the server's window stayed shut")
                self.read_some(min(0.5, max(0.01, deadline - time.monotonic())))

    # -- receiving
    def read_some(self, timeout: float) -> bool:
        """Process what arrives within ``timeout``; False at EOF."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return True
        except OSError:
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for ev in events:
            self._event(ev)
        self.flush()
        return True

    def _event(self, ev: Any) -> None:
        r = self.responses.get(getattr(ev, "stream_id", 0))
        if isinstance(ev, h2.events.ResponseReceived):
            headers = dict(ev.headers)
            r.status = int(headers.pop(":status"))
            r.headers = headers
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            r.informational.append(int(dict(ev.headers)[":status"]))
        elif isinstance(ev, h2.events.DataReceived):
            if r is not None:
                r.body += ev.data
            if self.auto_ack and ev.flow_controlled_length:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            r.ended = True
            r.done_at = time.monotonic()
        elif isinstance(ev, h2.events.StreamReset):
            if r is not None:
                r.reset = ev.error_code
                r.done_at = time.monotonic()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True

    def wait(self, sids: list[int] | None = None, timeout: float | None = None) -> list[Response]:
        """Read until every stream of ``sids`` (default: all) is done, the connection ends,
        or ``timeout``; their responses."""
        sids = list(self.responses) if sids is None else sids
        deadline = time.monotonic() + (timeout or self.timeout)
        while not all(self.responses[s].done for s in sids) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.read_some(min(left, 0.5))
        return [self.responses[s] for s in sids]

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Read until the server closes the connection (True) or ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.read_some(min(0.5, deadline - time.monotonic()))
        return self.closed

    def get(self, path: str, **kw: Any) -> Response:
        sid = self.request(path, **kw)
        return self.wait([sid])[0]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
