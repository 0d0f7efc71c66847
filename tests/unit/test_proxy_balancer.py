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


def hash_group(names, consistent=False, weights=None, max_conns=0):
    peers = [Peer(n, Target("127.0.0.1", 9100 + i), weight=(weights or {}).get(n, 1),
                  max_conns=max_conns) for i, n in enumerate(names)]
    return Group("h", peers, "hash", hash_key="$request_uri", consistent=consistent)


def test_hash_is_sticky_per_key_weighted_and_matches_nginx_formula():
    import zlib

    g = hash_group(["a", "b", "c"])
    for key in (b"/x", b"/y?1", b"/img/42.png"):
        assert len(set(picks(g, 5, key))) == 1
        # nginx (Cache::Memcached): ((crc32(key) >> 16) & 0x7fff) % total weight → a peer
        w = ((zlib.crc32(key) >> 16) & 0x7FFF) % 3
        assert g.select(0, key).name == "abc"[w]
    spread = Counter(g.select(0, b"/k%d" % i).name for i in range(3000))
    assert set(spread) == {"a", "b", "c"} and min(spread.values()) > 800
    heavy = hash_group(["a", "b"], weights={"a": 3})
    share = Counter(heavy.select(0, b"/k%d" % i).name for i in range(4000))
    assert 0.68 < share["a"] / 4000 < 0.82


def test_hash_rehashes_past_a_down_or_tried_peer():
    g = hash_group(["a", "b", "c"])
    key = b"/sticky"
    first = g.select(0, key)
    again = g.select(1 << first.index, key)  # tried: another peer, still by key
    assert again is not first and g.select(1 << first.index, key) is again
    first.fails, first.checked = first.max_fails, time.monotonic()  # marked down
    assert g.select(0, key) is again


def test_consistent_hash_moves_only_the_keys_of_a_removed_server():
    keys = [b"/obj/%d" % i for i in range(2000)]
    four = hash_group(["a", "b", "c", "d"], consistent=True)
    three = hash_group(["a", "b", "c"], consistent=True)
    before = {k: four.select(0, k).name for k in keys}
    after = {k: three.select(0, k).name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "d" for k in moved)  # only d's keys move
    assert 0.15 < len(moved) / len(keys) < 0.35  # about a quarter
    share = Counter(before.values())
    assert min(share.values()) > 300  # 160 points per server spread the keys
    plain = hash_group(["a", "b", "c", "d"])  # the non-consistent hash moves far more
    plain3 = hash_group(["a", "b", "c"])
    assert sum(plain.select(0, k).name != plain3.select(0, k).name for k in keys) > 1.5 * len(moved)


def test_consistent_hash_walks_on_past_an_unavailable_peer():
    g = hash_group(["a", "b", "c"], consistent=True)
    key = b"/walk"
    first = g.select(0, key)
    nxt = g.select(1 << first.index, key)
    assert nxt is not None and nxt is not first


def test_max_conns_skips_a_full_peer_and_none_when_all_are_full():
    g = group([spec("a"), spec("b")])
    a, b = g.peers
    a.max_conns = b.max_conns = 2
    a.conns = 2
    assert picks(g, 4) == ["b"] * 4  # full, not down
    assert not a.down()
    b.conns = 2
    assert g.select(0) is None  # every peer full: no live upstreams
    assert a.fails == 0
    a.conns = 1
    assert g.select(0) is a
    single = Group("one", [Peer("s", Target("127.0.0.1", 9200), max_conns=1)])
    single.peers[0].conns = 1
    assert single.select(0) is None
    assert g.stats()["peers"][0]["max_conns"] == 2


def test_random_follows_weights_and_skips_unavailable_peers():
    g = group([spec("a", 3), spec("b", 1)], "random")
    share = Counter(picks(g, 4000))
    assert 0.70 < share["a"] / 4000 < 0.80
    a, b = g.peers
    a.max_conns, a.conns = 1, 1  # full
    assert set(picks(g, 50)) == {"b"}
    assert g.select(1 << b.index) is None  # b tried, a full


def test_random_two_sends_to_the_less_busy_of_two():
    g = group([spec("a"), spec("b")], "random")
    g.two = True
    a, b = g.peers
    a.conns = 5
    assert set(picks(g, 50)) == {"b"}  # whichever came first, b has fewer in flight
    b.conns = 9
    assert set(picks(g, 50)) == {"a"}
