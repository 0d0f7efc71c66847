"""The transport layer (``edgeworker.io``) in process: plain and TLS transports over loopback
gevent sockets, their deadlines on a watchdog, and the watchdog itself."""

from __future__ import annotations

import os
import socket
import struct
import time

import gevent
import pytest
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.hub import Waiter

from edgeworker.errors import Expired
from edgeworker.io import BIOTLS, RECV, WATCHDOG, TLSTransport, Transport, Watchdog, transport

from ..support import self_signed_cert


def run(fn, timeout: float = 10.0):
    """Run ``fn`` in a greenlet (a watchdog throws into it) and return its result."""
    g = gevent.spawn(fn)
    g.join(timeout)
    assert g.ready(), "the greenlet did not finish"
    return g.get()


def connected() -> tuple:
    """Two connected gevent TCP sockets on loopback, without timeout."""
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    a = gsocket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    a.settimeout(None)
    b.settimeout(None)
    return a, b


@pytest.fixture
def pair():
    a, b = connected()
    yield a, b
    a.close()
    b.close()


def test_a_read_past_its_deadline_raises_expired_and_disarms(pair) -> None:
    a, b = pair
    io = Transport(a)

    def reader():
        t0 = time.monotonic()
        with pytest.raises(Expired):
            io.read(0.2)
        return time.monotonic() - t0

    took = run(reader)
    assert 0.15 <= took < 0.2 + 3 * WATCHDOG.resolution + 1.0
    assert not WATCHDOG.armed
    assert isinstance(Expired(), TimeoutError)  # callers catch it as one


def test_a_read_returns_what_arrived_and_b_at_the_end(pair) -> None:
    a, b = pair
    io = Transport(a)
    b.sendall(b"hello")
    assert run(lambda: io.read(5)) == b"hello"  # there already: no wait
    gevent.spawn_later(0.05, b.sendall, b"later")
    assert run(lambda: io.read(5, wait_first=True)) == b"later"
    b.close()
    assert run(lambda: io.read(5)) == b""


def test_a_reset_reads_as_the_end_only_when_asked() -> None:
    for reset_is_eof in (True, False):
        c, d = connected()
        io = Transport(c, reset_is_eof=reset_is_eof)
        d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        d.close()  # an RST instead of a FIN
        if reset_is_eof:
            assert run(lambda io=io: io.read(5, wait_first=True)) == b""
        else:
            with pytest.raises(ConnectionResetError):
                run(lambda io=io: io.read(5, wait_first=True))
        c.close()


def test_send_rest_waits_for_a_slow_reader(pair) -> None:
    a, b = pair
    io = Transport(a)
    size = 8 * 1024 * 1024
    got = bytearray()

    def slow_reader():
        while len(got) < size:
            data = b.recv(1 << 20)
            if not data:
                break
            got.extend(data)
            gevent.sleep(0.001)

    reader = gevent.spawn(slow_reader)
    run(lambda: io.sendall(b"x" * size, 5), timeout=30)
    reader.join(30)
    assert len(got) == size


def test_send_rest_expires_when_the_peer_never_reads(pair) -> None:
    a, b = pair
    io = Transport(a)
    with pytest.raises(Expired):
        run(lambda: io.sendall(b"x" * (64 * 1024 * 1024), 0.2), timeout=30)


def test_sendfile_sends_a_file_and_tells_the_end(pair, tmp_path) -> None:
    a, b = pair
    io = Transport(a)
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert run(lambda: io.sendfile(fd, 2, 5, 5)) == 5
        assert run(lambda: io.sendfile(fd, 10, 5, 5)) == 0  # the file's end
    finally:
        os.close(fd)
    assert b.recv(100) == b"23456"


def test_alive_sees_a_peer_that_closed_or_sent_unasked(pair) -> None:
    a, b = pair
    io = Transport(a)
    assert io.alive()
    b.sendall(b"?")
    gevent.sleep(0.01)
    assert not io.alive()
    c, d = connected()
    closed = Transport(c)
    assert closed.alive()
    d.close()
    gevent.sleep(0.01)
    assert not closed.alive()
    c.close()


def test_detach_hands_the_socket_over_and_close_leaves_it_open(pair) -> None:
    a, b = pair
    io = Transport(a)
    assert io.detach() is a
    io.close()
    assert a.fileno() != -1
    io2 = Transport(b)
    io2.close()
    assert b.fileno() == -1


# ------------------------------------------------------------------------------ TLS
@pytest.fixture(params=["gevent", "bio"])
def tls_pair(request, pair, tmp_path):
    """(client, server) TLS transports over ``pair``, handshake done. The server side is
    gevent's ``SSLSocket`` or, as edgeworker's TLS termination, TLS over memory buffers
    (``BIOTLS``, a pyOpenSSL ``Connection`` made without a socket)."""
    cert, key = self_signed_cert(tmp_path)
    client_ctx = gssl.create_default_context(cafile=str(cert))
    a, b = pair
    c = client_ctx.wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
    if request.param == "gevent":
        server_ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        s = server_ctx.wrap_socket(b, server_side=True, do_handshake_on_connect=False)
        server = transport(s)
    else:
        from OpenSSL import SSL

        server_ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        server_ctx.use_certificate_chain_file(str(cert))
        server_ctx.use_privatekey_file(str(key))
        obj = SSL.Connection(server_ctx, None)
        obj.set_accept_state()
        server = TLSTransport(b, tls=BIOTLS(obj, b._sock))
    client = transport(c)
    assert isinstance(client, TLSTransport) and isinstance(server, TLSTransport)
    g = gevent.spawn(server.handshake, 5)
    run(lambda: client.handshake(5))
    g.join(5)
    assert g.successful()
    return client, server


def test_tls_exchanges_both_ways_with_large_writes(tls_pair) -> None:
    client, server = tls_pair
    size = 4 * 1024 * 1024
    got = bytearray()

    def read_all():
        while len(got) < size:
            data = server.read(5)
            if not data:
                break
            got.extend(data)
            assert len(data) <= RECV

    reader = gevent.spawn(read_all)
    run(lambda: client.sendall(b"y" * size, 5), timeout=30)
    reader.join(30)
    assert len(got) == size and set(got) == {ord("y")}
    run(lambda: server.sendall(b"pong", 5))
    assert run(lambda: client.read(5)) == b"pong"
    gevent.spawn_later(0.05, server.sendall, b"later", 5)
    assert run(lambda: client.read(5, wait_first=True)) == b"later"


def test_tls_large_writes_of_the_server_wait_for_the_reader(tls_pair) -> None:
    client, server = tls_pair
    size = 4 * 1024 * 1024
    data = bytes(range(256)) * (size // 256)
    got = bytearray()

    def read_all():
        gevent.sleep(0.1)  # the socket buffers fill up first: the writer waits
        while len(got) < size:
            chunk = client.read(5)
            if not chunk:
                break
            got.extend(chunk)

    reader = gevent.spawn(read_all)
    run(lambda: server.sendall(data, 5), timeout=30)
    run(lambda: server.sendall(b"end", 5))
    reader.join(30)
    assert bytes(got) == data
    assert run(lambda: client.read(5)) == b"end"


def test_tls_buffered_bytes_are_pending_and_readable_without_a_wait(tls_pair) -> None:
    client, server = tls_pair
    run(lambda: server.sendall(b"abcdefghij", 5))
    gevent.sleep(0.05)
    assert client.pending() == 0  # still encrypted on the socket
    assert run(lambda: client.recv(4)) == b"abcd"
    assert client.pending() == 6  # the rest of the record, decrypted
    run(lambda: client.wait_readable(0.01))  # returns at once: nothing to wait for
    assert run(lambda: client.read(0.2, wait_first=True)) == b"efghij"  # no wait either
    with pytest.raises(BlockingIOError):
        client.recv(4)  # nothing more now


def test_tls_read_at_the_peers_close_is_the_end(tls_pair) -> None:
    client, server = tls_pair
    server.close()
    assert run(lambda: client.read(5)) == b""


def test_tls_read_past_its_deadline_raises_expired(tls_pair) -> None:
    client, server = tls_pair
    with pytest.raises(Expired):
        run(lambda: client.read(0.2))
    assert not WATCHDOG.armed


def test_tls_handshake_has_its_own_deadline(pair) -> None:
    a, b = pair  # b never answers
    ctx = gssl.create_default_context()
    c = ctx.wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
    io = transport(c)
    t0 = time.monotonic()
    with pytest.raises(Expired):
        run(lambda: io.handshake(0.2))
    assert time.monotonic() - t0 < 0.2 + 3 * WATCHDOG.resolution + 1.0


# ------------------------------------------------------------------------------ watchdog
def test_a_watchdog_that_stops_when_idle_starts_again_on_arm() -> None:
    dog = Watchdog(0.005, idle_stop=0.05)

    def waits_too_long():
        with pytest.raises(Expired):
            dog.wait(Waiter(), 0.05)

    run(waits_too_long)
    assert dog._timer is not None
    gevent.sleep(0.3)
    assert dog._timer is None  # nothing armed for a while: the timer stopped
    run(waits_too_long)  # armed again: it runs again
    assert not dog.armed
