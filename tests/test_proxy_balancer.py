"""Balancing, passive health and re-resolution, on the real classes (no sockets needed)."""

from __future__ import annotations

import time
from collections import Counter

from edgeworker.proxy.balancer import Group, Peer
from edgeworker.proxy.resolver import ResolveError, Target


def group(specs, balance="round_robin"):
    peers = [Peer(name, Target("127.0.0.1", 9000 + i), weight=w, max_fails=mf,
                  fail_timeout=ft, backup=b)
             for i, (name, w, mf, ft, b) in enumerate(specs)]
    return Group("g", peers, balance)


def spec(name, weight=1, max_fails=1, fail_timeout=10.0, backup=False):
    return (name, weight, max_fails, fail_timeout, backup)


def picks(g, n, client=b""):
    return [g.select(0, client).name for _ in range(n)]


def test_smooth_weighted_round_robin_matches_nginx_sequence():
    g = group([spec("a", 5), spec("b", 1), spec("c", 1)])
    # nginx's documented smooth sequence for weights 5, 1, 1
    assert picks(g, 7) == ["a", "a", "b", "a", "c", "a", "a"]
    assert Counter(picks(g, 700)) == {"a": 500, "b": 100, "c": 100}


def test_equal_weights_alternate():
    g = group([spec("a"), spec("b"), spec("c")])
    assert picks(g, 6) == ["a", "b", "c", "a", "b", "c"]


def test_least_conn_prefers_idle_peer_and_weights():
    g = group([spec("a"), spec("b")], "least_conn")
    a, b = g.peers
    a.conns = 3
    assert picks(g, 3) == ["b", "b", "b"]
    b.conns = 3
    assert set(picks(g, 4)) == {"a", "b"}  # ties: round robin
    g2 = group([spec("a", 3), spec("b", 1)], "least_conn")
    g2.peers[0].conns = 2  # 2/3 < 1/1
    g2.peers[1].conns = 1
    assert picks(g2, 2) == ["a", "a"]


def test_ip_hash_is_sticky_per_24_network():
    g = group([spec("a"), spec("b"), spec("c")], "ip_hash")
    one = picks(g, 5, bytes([10, 1, 2, 3]))
    assert len(set(one)) == 1
    # the last octet does not matter (nginx hashes the first three)
    assert picks(g, 1, bytes([10, 1, 2, 200])) == one[:1]
    spread = {g.select(0, bytes([10, i, 7, 1])).name for i in range(64)}
    assert spread == {"a", "b", "c"}


def test_ip_hash_rehashes_when_the_peer_is_down():
    g = group([spec("a"), spec("b")], "ip_hash")
    client = bytes([192, 168, 1, 1])
    first = g.select(0, client)
    g.failed(first)  # max_fails=1: down
    other = g.select(0, client)
    assert other is not first


def test_max_fails_marks_down_for_fail_timeout_then_probe():
    g = group([spec("a", max_fails=2, fail_timeout=0.3), spec("b")])
    a, b = g.peers
    g.failed(a)
    assert a.usable(time.monotonic())  # one fail of two
    g.failed(a)
    assert not a.usable(time.monotonic())
    assert set(picks(g, 6)) == {"b"}
    time.sleep(0.35)
    chosen = picks(g, 4)
    assert "a" in chosen  # probed after fail_timeout
    g.succeeded(a)
    assert a.fails == 0


def test_failure_of_the_probe_marks_down_again():
    g = group([spec("a", max_fails=1, fail_timeout=0.2), spec("b")])
    a = g.peers[0]
    g.failed(a)
    time.sleep(0.25)
    p = None
    for _ in range(3):
        p = g.select(0)
        if p is a:
            break
    assert p is a
    g.failed(a)
    assert not a.usable(time.monotonic())


def test_tried_peers_are_skipped_and_backup_used_last():
    g = group([spec("a"), spec("b"), spec("bk", backup=True)])
    a, b, bk = g.peers
    first = g.select(0)
    second = g.select(1 << first.index)
    assert {first, second} == {a, b}
    third = g.select((1 << a.index) | (1 << b.index))
    assert third is bk
    assert g.select(7) is None
    assert g.max_tries == 3


def test_backup_takes_over_when_primaries_are_down():
    g = group([spec("a"), spec("bk", backup=True)])
    assert picks(g, 3) == ["a", "a", "a"]
    g.failed(g.peers[0])
    assert picks(g, 3) == ["bk", "bk", "bk"]


def test_all_down_returns_none_and_clears_fails():
    g = group([spec("a"), spec("b")])
    for p in g.peers:
        g.failed(p)
    assert g.select(0) is None
    assert all(p.fails == 0 for p in g.peers)  # the next request probes again (nginx)
    assert g.select(0) is not None


def test_single_peer_is_never_marked_down():
    g = group([spec("a", max_fails=1)])
    for _ in range(5):
        g.failed(g.peers[0])
    assert g.select(0) is g.peers[0]


def test_max_fails_zero_disables_accounting():
    g = group([spec("a", max_fails=0), spec("b")])
    for _ in range(10):
        g.failed(g.peers[0])
    assert "a" in picks(g, 2)


# ------------------------------------------------------------------------- resolver
def test_ip_literal_needs_no_lookup():
    calls = []
    t = Target("127.0.0.1", 80, lookup=lambda h, p: calls.append(h) or [])
    assert t.next_address() == ("127.0.0.1", 80)
    assert calls == []


def test_name_is_re_resolved_after_interval_without_blocking():
    answers = {"svc": [("127.0.0.1", 80)]}
    calls = []

    def lookup(host, port):
        calls.append(host)
        return list(answers[host])

    t = Target("svc", 80, interval=0.1, lookup=lookup)
    assert t.next_address() == ("127.0.0.1", 80)
    answers["svc"] = [("127.0.0.2", 80)]
    assert t.next_address() == ("127.0.0.1", 80)  # still valid
    time.sleep(0.15)
    import gevent

    t.addresses()  # expired: refreshed in the background, old answer used meanwhile
    gevent.sleep(0.05)
    assert t.next_address() == ("127.0.0.2", 80)
    assert len(calls) == 2


def test_failed_refresh_keeps_old_addresses():
    state = {"fail": False}

    def lookup(host, port):
        if state["fail"]:
            raise OSError("temporary failure in name resolution")
        return [("127.0.0.3", port)]

    t = Target("svc", 81, interval=0.05, lookup=lookup)
    assert t.next_address() == ("127.0.0.3", 81)
    state["fail"] = True
    time.sleep(0.06)
    import gevent

    t.addresses()
    gevent.sleep(0.02)
    assert t.next_address() == ("127.0.0.3", 81)


def test_unresolvable_name_raises():
    def lookup(host, port):
        raise OSError("Name or service not known")

    t = Target("nope.invalid", 80, lookup=lookup)
    try:
        t.next_address()
    except ResolveError as exc:
        assert "nope.invalid" in str(exc)
    else:
        raise AssertionError("no ResolveError")


def test_localhost_resolves_with_the_system_resolver():
    t = Target("localhost", 8080)
    host, port = t.next_address()
    assert port == 8080 and host in ("127.0.0.1", "::1")
