"""The proxy's per-worker keep-alive pool (``edgeworker.proxy.pool.Pool``) on real sockets."""

from __future__ import annotations

import socket

from edgeworker.proxy.client import UpConn
from edgeworker.proxy.pool import Pool


def pair(key=("127.0.0.1", 1)):
    """(an UpConn, the socket at the upstream's end)."""
    a, b = socket.socketpair()
    return UpConn(a, key), b


def test_the_most_recent_idle_connection_to_the_key_is_taken_first():
    pool = Pool(4)
    c1, p1 = pair()
    c2, p2 = pair()
    other, p3 = pair(("127.0.0.1", 2))
    pool.put(c1)
    pool.put(c2)
    pool.put(other)
    assert pool.get(("127.0.0.1", 1), False) is c2  # searched past the other key's
    assert pool.get(("127.0.0.1", 1), False) is c1
    assert pool.get(("127.0.0.1", 1), False) is None
    assert pool.get(("127.0.0.1", 2), True) is other
    assert c1.reused and c2.reused and other.reused
    assert (pool.hits, pool.misses) == (3, 1)
    for s in (p1, p2, p3):
        s.close()


def test_a_connection_idle_past_the_timeout_is_closed_even_when_fresh_ones_skip_checks():
    pool = Pool(4, idle_timeout=0.2)  # shorter than the unchecked "fresh" time
    conn, peer = pair()
    pool.put(conn)
    conn.idle_since -= 0.5
    assert pool.get(("127.0.0.1", 1), False) is None
    assert conn.sock.fileno() == -1  # closed
    assert pool.idle_count() == 0
    peer.close()


def test_a_connection_the_upstream_closed_is_dropped_when_checked():
    pool = Pool(4)
    conn, peer = pair()
    pool.put(conn)
    peer.close()
    assert pool.get(("127.0.0.1", 1), True) is None  # checked: EOF seen
    conn2, peer2 = pair()
    pool.put(conn2)
    peer2.close()
    # unchecked and fresh: handed out (the caller retries once on a fresh connection)
    assert pool.get(("127.0.0.1", 1), False) is conn2
    conn2.close()


def test_size_and_max_requests_bound_the_pool():
    pool = Pool(2, max_requests=3)
    conns = [pair() for _ in range(3)]
    for conn, _ in conns:
        pool.put(conn)
    assert pool.idle_count() == 2
    assert conns[0][0].sock.fileno() == -1  # the oldest was closed
    worn, peer = pair()
    worn.requests = 2
    pool.put(worn)  # its third request: closed, not kept
    assert worn.sock.fileno() == -1 and pool.idle_count() == 2
    pool.close_all()
    assert pool.idle_count() == 0
    for _, p in conns:
        p.close()
    peer.close()
