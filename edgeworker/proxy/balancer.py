"""Upstream groups: peers, balancing, passive health (nginx's upstream module).

Per worker, as in nginx (no state is shared between workers):

- ``round_robin``: smooth weighted round robin (nginx's: every pick adds each peer's
  effective weight to its current weight, takes the highest, and subtracts the total from it;
  weights 5,1,1 give a a b a c a a, never a burst).
- ``least_conn``: the peer with the fewest active connections relative to its weight; ties are
  broken by smooth weighted round robin among the tied peers.
- ``ip_hash``: nginx's hash of the first three octets of an IPv4 client address (the whole
  address for IPv6); a peer that is down or already tried makes it re-hash (20 times at most),
  then fall back to round robin.
- ``hash`` (nginx ``hash KEY``): the request's key (``hash = "$request_uri"``, expanded per
  request) picks the peer as nginx does, compatible with Cache::Memcached: a CRC-32 of the key
  (of "N" + key when re-hashing), ``(crc >> 16) & 0x7fff`` added up, modulo the total weight;
  a peer that is down, full or already tried makes it re-hash (20 times at most), then fall
  back to round robin. With ``consistent`` (``hash KEY consistent``): a ketama ring of 160
  points per unit of weight, so adding or removing a server moves only the keys of its share;
  an unusable peer makes it walk on to the next points (20 at most), then round robin.
- ``random`` (nginx ``random``): a server at random, in proportion to its weight, among those
  not down, full or tried; with ``two`` (nginx ``random two least_conn``) two such servers at
  random and the one with fewer requests in flight relative to its weight.
- ``max_conns`` (per server, per worker as nginx without a ``zone``): a peer with that many
  requests in flight is skipped, not marked down; when every peer is down or full the request
  fails with 502 ("no live upstreams").
- ``backup`` peers get requests only when every primary peer is down or was tried.
- Passive health: a failed attempt (error or timeout, never an HTTP status) counts one fail;
  ``max_fails`` fails within ``fail_timeout`` mark the peer down for ``fail_timeout``. After
  that one request probes it: success clears its fails, failure marks it down again.
  ``max_fails = 0`` disables the accounting. A group with a single peer is never marked down
  (nginx). When every peer is down the request fails at once with 502 ("no live upstreams")
  and the fails are cleared so the next request tries again (nginx).
"""

from __future__ import annotations

import random
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any
from zlib import crc32

from .pool import Pool
from .resolver import Target


class Peer:
    """One configured server of a group."""

    __slots__ = (
        "name",
        "target",
        "weight",
        "effective_weight",
        "current_weight",
        "max_fails",
        "fail_timeout",
        "fails",
        "accessed",
        "checked",
        "backup",
        "conns",
        "requests",
        "failures",
        "index",
        "max_conns",
    )

    def __init__(self, name: str, target: Target, weight: int = 1, max_fails: int = 1,
                 fail_timeout: float = 10.0, backup: bool = False, max_conns: int = 0) -> None:
        self.name = name
        self.target = target
        self.weight = weight
        self.effective_weight = weight
        self.current_weight = 0
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.fails = 0
        self.accessed = 0.0
        self.checked = 0.0
        self.backup = backup
        self.conns = 0  # requests in flight on this peer (this worker)
        self.requests = 0
        self.failures = 0
        self.index = 0
        self.max_conns = max_conns  # 0: no limit

    def usable(self, now: float) -> bool:
        """Not marked down: fewer than ``max_fails`` fails, or ``fail_timeout`` has passed."""
        return not (self.max_fails and self.fails >= self.max_fails
                    and now - self.checked <= self.fail_timeout)

    def available(self, now: float) -> bool:
        """May take a request now: usable and below ``max_conns`` (``usable`` inlined: this
        runs for every peer a selection looks at)."""
        if self.max_conns and self.conns >= self.max_conns:
            return False
        return not (self.max_fails and self.fails >= self.max_fails
                    and now - self.checked <= self.fail_timeout)

    def down(self, now: float | None = None) -> bool:
        return not self.usable(time.monotonic() if now is None else now)

    def __repr__(self) -> str:
        return f"<Peer {self.name} w={self.weight} fails={self.fails}>"


class Group:
    """A balanced set of peers with its keep-alive pool and timeouts."""

    def __init__(self, name: str, peers: Sequence[Peer], balance: str = "round_robin",
                 keepalive: int = 32, connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 send_timeout: float = 60.0, hash_key: str = "", consistent: bool = False,
                 two: bool = False) -> None:
        self.name = name
        self.two = two  # balance = "random": the less busy of two random picks
        #: balance = "hash": the key template (expanded per request by the proxy)
        self.hash_key = hash_key
        self.consistent = consistent
        self.primary = [p for p in peers if not p.backup]
        self.backup = [p for p in peers if p.backup]
        for i, p in enumerate(self.primary + self.backup):
            p.index = i
        self.peers = self.primary + self.backup
        self.single = len(self.peers) == 1
        self.balance = balance
        self.pool = Pool(keepalive)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout
        self.max_tries = len(self.peers)
        self._primary_weight = sum(p.weight for p in self.primary)
        self._ring: list[int] = []  # sorted ketama points (consistent hash)
        self._ring_peers: list[Peer] = []
        if balance == "hash" and consistent:
            points = sorted(
                (crc32(f"{p.name}#{i}".encode()), p.index, p)
                for p in self.primary for i in range(160 * p.weight)
            )
            self._ring = [h for h, _, _ in points]
            self._ring_peers = [p for _, _, p in points]

    @classmethod
    def from_config(cls, name: str, up: Any) -> Group:
        """Build from a ``proxy.schema.Upstream`` (servers already ``UpstreamServer``)."""
        from ..confschema import parse_host_port

        peers = []
        for s in up.servers:
            host, port = parse_host_port(s.address, 80)
            peers.append(Peer(s.address, Target(host, port), s.weight, s.max_fails,
                              float(s.fail_timeout), s.backup, s.max_conns))
        return cls(name, peers, up.balance, up.keepalive, float(up.connect_timeout),
                   float(up.read_timeout), float(up.send_timeout), up.hash, up.consistent,
                   up.two)

    # ------------------------------------------------------------------ selection
    def select(self, tried: int, client: bytes = b"") -> Peer | None:
        """The peer for the next attempt, or None when none is left.

        ``tried`` is a bit mask of peer indexes already tried for this request; ``client`` the
        packed client address (for ``ip_hash``), or the request's key (for ``hash``).
        """
        if self.single:
            p = self.peers[0]  # never marked down (nginx): only max_conns can turn it away
            return None if tried & 1 or (p.max_conns and p.conns >= p.max_conns) else p
        now = time.monotonic()
        balance = self.balance
        if balance == "ip_hash" and client:
            peer = self._ip_hash(tried, client, now)
        elif balance == "hash":
            if self._ring:
                peer = self._consistent(tried, client, now)
            else:
                peer = self._hash(tried, client, now)
        elif balance == "random":
            peer = self._random(tried, now)
        elif self.balance == "least_conn":
            peer = self._least_conn(self.primary, tried, now)
        else:
            peer = self._swrr(self.primary, tried, now)
        if peer is None and self.backup:
            if self.balance == "least_conn":
                peer = self._least_conn(self.backup, tried, now)
            else:
                peer = self._swrr(self.backup, tried, now)
        if peer is None:
            if not tried:
                # every peer is down: clear the fails so the next request probes again (nginx)
                for p in self.peers:
                    p.fails = 0
            return None
        if now - peer.checked > peer.fail_timeout:
            peer.checked = now
        return peer

    @staticmethod
    def _swrr(peers: list[Peer], tried: int, now: float) -> Peer | None:
        best = None
        total = 0
        for p in peers:
            if tried & (1 << p.index) or not p.available(now):
                continue
            p.current_weight += p.effective_weight
            total += p.effective_weight
            if p.effective_weight < p.weight:
                p.effective_weight += 1
            if best is None or p.current_weight > best.current_weight:
                best = p
        if best is not None:
            best.current_weight -= total
        return best

    def _least_conn(self, peers: list[Peer], tried: int, now: float) -> Peer | None:
        best: list[Peer] = []
        for p in peers:
            if tried & (1 << p.index) or not p.available(now):
                continue
            if not best:
                best = [p]
                continue
            b = best[0]
            lhs, rhs = p.conns * b.weight, b.conns * p.weight
            if lhs < rhs:
                best = [p]
            elif lhs == rhs:
                best.append(p)
        if not best:
            return None
        if len(best) == 1:
            return best[0]
        return self._swrr(best, 0, now)

    def _ip_hash(self, tried: int, client: bytes, now: float) -> Peer | None:
        octets = client[:3] if len(client) == 4 else client
        h = 89
        total = self._primary_weight
        for _ in range(20):
            for b in octets:
                h = (h * 113 + b) % 6271
            p = self._at_weight(h % total)
            if not tried & (1 << p.index) and p.available(now):
                return p
        return self._swrr(self.primary, tried, now)

    def _at_weight(self, w: int) -> Peer:
        """The primary peer whose share of the total weight holds ``w`` (0 <= w < total)."""
        for p in self.primary:
            if w < p.weight:
                break
            w -= p.weight
        return p

    def _random(self, tried: int, now: float) -> Peer | None:
        peers = [p for p in self.primary if not tried & (1 << p.index) and p.available(now)]
        if not peers:
            return None
        if len(peers) == 1:
            return peers[0]
        weights = [p.weight for p in peers]
        if not self.two:
            return random.choices(peers, weights)[0]
        a = random.choices(peers, weights)[0]
        i = peers.index(a)
        del peers[i], weights[i]
        b = random.choices(peers, weights)[0]
        # fewer requests in flight relative to weight; a tie goes to the first pick
        return b if b.conns * a.weight < a.conns * b.weight else a

    def _hash(self, tried: int, key: bytes, now: float) -> Peer | None:
        total = self._primary_weight
        acc = 0
        for rehash in range(20):
            crc = crc32(b"%d%b" % (rehash, key)) if rehash else crc32(key)
            acc += (crc >> 16) & 0x7FFF
            p = self._at_weight(acc % total)
            if not tried & (1 << p.index) and p.available(now):
                return p
        return self._swrr(self.primary, tried, now)

    def _consistent(self, tried: int, key: bytes, now: float) -> Peer | None:
        ring = self._ring
        peers = self._ring_peers
        n = len(ring)
        at = bisect_left(ring, crc32(key))
        for step in range(20):
            p = peers[(at + step) % n]
            if not tried & (1 << p.index) and p.available(now):
                return p
        return self._swrr(self.primary, tried, now)

    # ------------------------------------------------------------------ accounting
    def failed(self, peer: Peer) -> bool:
        """Count a failed attempt (error/timeout) against ``peer``; True if that marked it
        down (``max_fails`` reached)."""
        peer.failures += 1
        if self.single or not peer.max_fails:
            return False
        now = time.monotonic()
        peer.fails += 1
        peer.accessed = now
        peer.checked = now
        peer.effective_weight -= max(1, peer.weight // peer.max_fails)
        if peer.effective_weight < 0:
            peer.effective_weight = 0
        return peer.fails == peer.max_fails

    def succeeded(self, peer: Peer) -> bool:
        """An attempt got a response: a probe after ``fail_timeout`` clears the fails.
        True if the peer had been marked down and is up again."""
        if peer.fails and peer.accessed < peer.checked:
            was_down = peer.fails >= peer.max_fails
            peer.fails = 0
            return was_down
        return False

    def stats(self) -> dict:
        """This worker's view: per peer weight, state, fails, active and total requests."""
        now = time.monotonic()
        return {
            "balance": self.balance,
            "keepalive_idle": self.pool.idle_count(),
            "peers": [
                {
                    "server": p.name,
                    "backup": p.backup,
                    "weight": p.weight,
                    "state": "down" if not p.usable(now) else "up",
                    "active": p.conns,
                    "max_conns": p.max_conns,
                    "requests": p.requests,
                    "fails": p.failures,
                }
                for p in self.peers
            ],
        }
