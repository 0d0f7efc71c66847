"""SharedDict: a slab-allocated dict in shared memory with LRU, TTL, flags and lists.

Every public method takes the zone lock once (long scans take it in batches).  Every
operation finds its key's record with one hash-chain walk, ``SharedDict._lookup``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from zlib import crc32

from . import slab as _slab
from .errors import IsAList, NoMemory, NotAList, NotANumber, NotFound
from .layout import (
    CLASSES,
    ELEM,
    ELEM_SIZE,
    F64,
    H_DIRTY,
    H_ENTRIES,
    H_EVICTIONS,
    H_FREERUN,
    H_HITS,
    H_LRU,
    H_OWNER,
    H_WANT,
    I64,
    LARGE,
    LHEAD,
    MAX_SMALL,
    N_EXPIRES,
    N_KEY,
    N_VTYPE,
    NODE,
    NODE_MATCH,
    NODE_META,
    NODE_STATE,
    NODE_TAIL,
    PAGE,
    SIZE2CLS,
    STATS,
    T_BOOL,
    T_BYTES,
    T_FLOAT,
    T_INT,
    T_LIST,
    T_STR,
    U64,
    VALUE_PAD,
    Geometry,
    U32x2,
    aligned_view,
    i64_pack,
    i64_unpack,
    node_size,
    node_unpack,
    u32_pack,
    u32_unpack,
    value_offset,
)
from .lock import BusyError, NoLock, ShmLock
from .segment import Segment, check_name
from .segment import accel as _accel
from .sizes import parse_size
from .verify import verify_zone

# the C hit path of incr (shm/_accel.c, built by setup.py when a compiler is there), or None
_AccelZone = _accel.Zone if _accel is not None else None

log = logging.getLogger("shm")

_MISSING = object()
_now_ns = _monotonic_ns = time.monotonic_ns
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


# The lock owner pid is read from this global, refreshed in every child by os.fork (os.getpid()
# costs a system call per operation).  It always equals os.getpid() for forks made through
# Python (os.fork, multiprocessing, subprocess).
os.register_at_fork(after_in_child=_refresh_pid)
_match_unpack = NODE_MATCH.unpack_from
_state_unpack = NODE_STATE.unpack_from
_i64_pack_b = I64.pack
_tail_pack = NODE_TAIL.pack_into
_f64_unpack = F64.unpack_from
_OWNER = H_OWNER >> 2
_HEAD = H_LRU >> 2
_TAIL = _HEAD + 1
_ENTRIES = H_ENTRIES >> 3
_DIRTY = H_DIRTY >> 2
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
MAX_EVICT = 4096  # live entries a single write may evict
SWEEP_SCAN = 256  # LRU tail entries examined for expired ones before evicting live ones
SCAN_BUCKETS = 256  # buckets per lock hold in get_keys / flush_expired
HIT_FLUSH = 1023  # local hit/miss counts are added to the zone every 1024 lookups

SET, SAFE_SET, ADD, SAFE_ADD, REPLACE = range(5)
_SAFE = (False, True, False, True, False)


def _key_slow(key: object) -> bytes:
    if isinstance(key, str):
        return str(key).encode()
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


def _bad_key_len(n: int) -> None:
    raise ValueError("empty key" if n == 0 else "key too long")


def _encode(value: object) -> tuple[int, bytes]:
    """(vtype, bytes) for a storable value; TypeError / OverflowError otherwise."""
    t = value.__class__
    if t is int:
        if I64_MIN <= value <= I64_MAX:  # type: ignore[operator]
            return T_INT, _i64_pack_b(value)
        raise OverflowError("int does not fit in 64 bits")
    if t is str:
        return T_STR, value.encode()  # type: ignore[union-attr]
    if t is bytes:
        return T_BYTES, value  # type: ignore[return-value]
    if t is float:
        return T_FLOAT, F64.pack(value)
    if t is bool:
        return T_BOOL, b"\x01" if value else b"\x00"
    if isinstance(value, bool):
        return T_BOOL, b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return _encode(int(value))
    if isinstance(value, float):
        return T_FLOAT, F64.pack(float(value))
    if isinstance(value, str):
        return T_STR, str(value).encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return T_BYTES, bytes(value)
    raise TypeError(f"bad value type {type(value).__name__}")


def _decode(buf, vo: int, vt: int, vlen: int) -> Any:
    if vt == T_INT:
        return i64_unpack(buf, vo)[0]
    if vt == T_STR:
        return buf[vo : vo + vlen].decode()
    if vt == T_BYTES:
        return bytes(buf[vo : vo + vlen])
    if vt == T_FLOAT:
        return _f64_unpack(buf, vo)[0]
    if vt == T_BOOL:
        return buf[vo] != 0
    raise IsAList()


def _exptime_ms(exptime: float) -> int:
    if exptime.__class__ is not int and exptime.__class__ is not float:
        if isinstance(exptime, bool) or not isinstance(exptime, (int, float)):
            raise TypeError("exptime must be a number of seconds")
    if exptime < 0 or exptime != exptime:
        raise ValueError("bad exptime: must be >= 0")
    if not exptime:
        return 0
    ms = int(exptime * 1000)
    return ms if ms > 0 else 1  # a positive exptime never means "forever"


def _check_flags(flags: int) -> None:
    if flags.__class__ is not int and (isinstance(flags, bool) or not isinstance(flags, int)):
        raise TypeError("flags must be an int")
    if not 0 <= flags <= 0xFFFFFFFF:
        raise ValueError("flags must be in 0..2**32-1")


class SharedDict:
    """A named shared-memory dict (docs/shared-dict.md).  Create with :meth:`create`, :meth:`attach`,
    :meth:`open_or_create`, or :meth:`from_buffer` (private buffer, no lock, for tests)."""

    __slots__ = (
        "name",
        "_buf",
        "_g",
        "_slab",
        "_lock",
        "_acquire",
        "_release",
        "_seg",
        "_mask",
        "_index",
        "_bidx",
        "_mq",
        "_md",
        "_m32",
        "_hits",
        "_misses",
        "_closed",
        "_aincr",
        "_fincr",
        "_clookup",
        "_clocked",
        "__weakref__",
    )

    def __init__(
        self, name: str, buf, lock: ShmLock | NoLock, seg: Segment | None = None, fmt: bool = False
    ) -> None:
        """Bind to ``buf`` (formatting it first if ``fmt``).  Use the classmethods instead."""
        self.name = name
        self._buf = buf
        if fmt:
            g = Geometry.for_size(len(buf))
            self._g = g
            self._slab = _slab.Slab(buf, g)
            self._format()
        else:
            self._g = g = Geometry.read(buf)
            self._slab = _slab.Slab(buf, g)
        self._lock = lock
        self._acquire = lock.acquire
        self._release = lock.release
        self._seg = seg
        self._mask = g.mask
        self._index = g.index_off
        self._bidx = g.index_off >> 2
        # u32 view of the zone: header words and node links (nodes are 16-byte aligned)
        mv = aligned_view(buf)
        self._m32 = mv.cast("I")
        self._mq = mv.cast("q")  # int values (8-byte aligned)
        self._md = mv.cast("d")  # float values
        # C hit path of incr (shm._accel), or None: pure Python
        self._aincr = self._fincr = self._clookup = self._clocked = None
        if _AccelZone is not None:
            sem = getattr(lock, "sem", None)
            if not isinstance(sem, _accel.Semaphore):
                sem = None  # a private buffer (NoLock), or posix_ipc's semaphore
            try:
                zone = _AccelZone(mv, self._bidx, self._mask, sem)
            except ValueError:  # pragma: no cover - a private buffer that is not 8-byte aligned
                pass
            else:
                self._aincr = zone.incr
                self._clookup = zone.lookup
                if sem is not None:
                    self._fincr = zone.fast_incr
                    self._clocked = zone.lookup  # can take the C semaphore itself
        self._hits = 0
        self._misses = 0
        self._closed = False
        if isinstance(lock, ShmLock):
            lock.on_takeover = self._on_takeover

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, size: int | str, *, mode: int = 0o600) -> SharedDict:
        """Create zone ``name`` of ``size`` bytes (int or "512k"/"10m"/"1g").

        ``FileExistsError`` if it exists; ``ValueError`` for a bad name or size (min 16k,
        max 4g - 4k).  The segment is ``/edgeworker.<name>`` (see ``shm.segment``).
        """
        check_name(name)
        total = parse_size(size)
        Geometry.for_size(total)
        seg = Segment.create(name, total, mode)
        try:
            lock = ShmLock(seg.sem, seg.mem, seg.fd)
            return cls(name, seg.mem, lock, seg, fmt=True)
        except BaseException:
            seg.close()
            Segment.unlink(name)
            raise

    @classmethod
    def attach(cls, name: str) -> SharedDict:
        """Map the existing zone ``name``; ``FileNotFoundError`` if it does not exist,
        ``ValueError`` if the segment is not a formatted zone (after waiting up to 1 s for a
        concurrent ``create`` to finish formatting it)."""
        seg = Segment.attach(name)
        try:
            deadline = time.monotonic() + 1.0
            while True:
                try:
                    Geometry.read(seg.mem)
                    break
                except ValueError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
            lock = ShmLock(seg.sem, seg.mem, seg.fd)
            return cls(name, seg.mem, lock, seg)
        except BaseException:
            seg.close()
            raise

    @classmethod
    def open_or_create(
        cls, name: str, size: int | str, *, mode: int = 0o600
    ) -> tuple[SharedDict, bool]:
        """Attach to zone ``name`` if it exists with exactly this size, else (re)create it empty.

        Returns ``(dict, kept)``: ``kept`` is True when existing contents were kept.  A zone of
        another size (or an unreadable one) is unlinked and recreated, and a warning is logged.
        Used by the edgeworker master on start and reload.
        """
        total = parse_size(size)
        try:
            d = cls.attach(name)
        except FileNotFoundError:
            Segment.unlink(name)  # a segment without its semaphore (or nothing at all)
            return cls.create(name, total, mode=mode), False
        except ValueError:
            log.warning("shm zone %r is unreadable; recreating it empty", name)
            Segment.unlink(name)
            return cls.create(name, total, mode=mode), False
        if d._g.total == total:
            return d, True
        log.warning("shm zone %r changed size %d -> %d; it starts empty", name, d._g.total, total)
        d.close()
        Segment.unlink(name)
        return cls.create(name, total, mode=mode), False

    @classmethod
    def from_buffer(cls, buf: bytearray, name: str = "local", *, fmt: bool = True) -> SharedDict:
        """A dict over a private writable buffer with a no-op lock (single process, tests)."""
        return cls(name, buf, NoLock(), None, fmt=fmt)

    @staticmethod
    def exists(name: str) -> bool:
        """True if a zone segment called ``name`` exists."""
        return Segment.exists(name)

    @staticmethod
    def remove(name: str) -> None:
        """Unlink zone ``name`` (segment and semaphore) without attaching; missing is fine."""
        Segment.unlink(check_name(name))

    def close(self) -> None:
        """Flush this process's hit/miss counts and unmap the zone here (it stays for others)."""
        if self._closed:
            return
        if self._seg is not None and (self._hits or self._misses):
            try:
                self._lock_()
                try:
                    self._flush_counts()
                finally:
                    self._unlock()
            except Exception:  # pragma: no cover - best effort on close
                pass
        self._closed = True
        if self._aincr is not None:
            self._aincr.__self__.release()
            self._aincr = self._fincr = self._clookup = self._clocked = None
        for v in (self._m32, self._mq, self._md):
            v.release()
        self._slab.release()
        if self._seg is not None:
            self._seg.close()

    def unlink(self) -> None:
        """Remove the zone's names; processes that have it mapped keep using it until close."""
        Segment.unlink(self.name)

    def __enter__(self) -> SharedDict:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SharedDict {self.name!r} {self._g.total} bytes>"

    # ---- locking ----------------------------------------------------------------------------
    def _lock_(self) -> None:
        try:
            self._acquire(0)
        except BusyError:
            self._lock.wait()
        self._m32[_OWNER] = _pid

    def _unlock(self) -> None:
        self._m32[_OWNER] = 0
        self._release()

    def _on_takeover(self, dead: int) -> None:
        """Called with the lock held after taking it from a dead holder: verify, repair."""
        log.error(
            "shm zone %r: lock held by dead process %d taken over by %d",
            self.name,
            dead,
            os.getpid(),
        )
        self._check_and_repair(dead)

    def _check_and_repair(self, dead: int) -> None:
        problems = verify_zone(self._buf, self._g)
        if problems:
            log.error(
                "shm zone %r damaged after process %d died holding its lock (%s); "
                "resetting it to empty",
                self.name,
                dead,
                "; ".join(problems[:5]),
            )
            self._format(keep_stats=True)
            return
        dirty = u32_unpack(self._buf, H_DIRTY)[0]
        if dirty:
            log.error(
                "shm zone %r: entry being rewritten by dead process %d dropped", self.name, dead
            )
            self._remove(dirty)
            u32_pack(self._buf, H_DIRTY, 0)

    def recover(self, pid: int) -> bool:
        """Release the lock if dead process ``pid`` holds it (call after reaping ``pid``).

        Verifies the structure and resets it (logging an error) if damaged.  Returns True if
        ``pid`` held the lock and this call took it over; False otherwise.
        """
        owner = self._m32[_OWNER]
        if owner != pid or not isinstance(self._lock, ShmLock):
            return False
        r = self._lock.try_takeover(owner)
        if r == 0:
            return False
        self._m32[_OWNER] = _pid
        self._unlock()
        return r == 1

    # ---- structure helpers (lock held) --------------------------------------------------------
    def _format(self, keep_stats: bool = False) -> None:
        buf, g = self._buf, self._g
        if keep_stats:
            _e, ev, hits, misses, _u = STATS.unpack_from(buf, H_ENTRIES)
        else:
            ev = hits = misses = 0
            buf[0:8] = bytes(8)  # no magic until the zone is complete
            u32_pack(buf, H_OWNER, 0)
        buf[g.index_off : g.pd_off] = bytes(g.pd_off - g.index_off)
        U32x2.pack_into(buf, H_LRU, 0, 0)
        u32_pack(buf, H_DIRTY, 0)
        self._slab.format()
        STATS.pack_into(buf, H_ENTRIES, 0, ev, hits, misses, 0)
        g.write(buf)

    def _flush_counts(self) -> None:
        buf = self._buf
        hits, misses = U64.unpack_from(buf, H_HITS)[0], U64.unpack_from(buf, H_HITS + 8)[0]
        U64.pack_into(buf, H_HITS, hits + self._hits)
        U64.pack_into(buf, H_HITS + 8, misses + self._misses)
        self._hits = self._misses = 0

    def _lookup(self, kb: bytes, h: int, link: bool = False, lock: bool = False) -> int:
        """The record of key ``kb`` (hash ``h``) in its hash chain: its offset, or with ``link``
        the index in the u32 view of the link that points to it (the bucket slot or the
        previous record's hash-next); 0 if the key is absent.

        Every operation finds its record here (the walk runs in C unless SHM_NO_ACCEL=1:
        ``Zone.lookup``).  Called with the zone lock held, or with ``lock`` to take it first;
        the caller then releases it (``_unlock``), unless this raises."""
        m32 = self._m32
        if lock:
            cl = self._clocked
            if cl is not None:
                off = cl(kb, h, _pid)  # the lock and the walk in one C call; None: it is busy
                if off is not None:
                    return off
            try:
                self._acquire(0)
            except BusyError:
                self._lock.wait()
            m32[_OWNER] = _pid
        try:
            cl = self._clookup
            if cl is not None and not link:
                return cl(kb, h)
            buf = self._buf
            n = len(kb)
            at = self._bidx + (h & self._mask)
            off = m32[at]
            while off:
                nxt, hh, kl = _match_unpack(buf, off)
                if hh == h and kl == n and buf[off + N_KEY : off + N_KEY + n] == kb:
                    return at if link else off
                at = off >> 2
                off = nxt
            return 0
        except BaseException:
            if lock:
                self._unlock()
            raise

    def _enter(self, key: str | bytes) -> int:
        """Check and encode ``key``, take the zone lock and find the key's record: its offset,
        or 0.  The caller releases the lock (``_unlock``)."""
        kb = self._key(key)
        return self._lookup(kb, crc32(kb), False, True)

    def _touch(self, off: int) -> None:
        """Move node ``off`` to the LRU head."""
        m32 = self._m32
        i = off >> 2
        lp = m32[i + 1]
        if not lp:
            return
        ln = m32[i + 2]
        m32[(lp >> 2) + 2] = ln
        if ln:
            m32[(ln >> 2) + 1] = lp
        else:
            m32[_TAIL] = lp
        head = m32[_HEAD]
        m32[i + 1] = 0
        m32[i + 2] = head
        m32[(head >> 2) + 1] = off
        m32[_HEAD] = off

    def _lru_unlink(self, off: int) -> None:
        m32 = self._m32
        i = off >> 2
        lp = m32[i + 1]
        ln = m32[i + 2]
        if lp:
            m32[(lp >> 2) + 2] = ln
        else:
            m32[_HEAD] = ln
        if ln:
            m32[(ln >> 2) + 1] = lp
        else:
            m32[_TAIL] = lp

    def _lru_push(self, off: int) -> None:
        m32 = self._m32
        i = off >> 2
        head = m32[_HEAD]
        m32[i + 1] = 0
        m32[i + 2] = head
        if head:
            m32[(head >> 2) + 1] = off
        else:
            m32[_TAIL] = off
        m32[_HEAD] = off

    def _chain_replace(self, old: int, new: int) -> None:
        """Put ``new`` where ``old`` is in its hash chain (new=0: unlink ``old``)."""
        buf = self._buf
        m32 = self._m32
        _nxt, h, kl = _match_unpack(buf, old)
        at = self._lookup(bytes(buf[old + N_KEY : old + N_KEY + kl]), h, True)
        if not at or m32[at] != old:
            raise RuntimeError("shm: node missing from its hash chain")
        nxt = m32[old >> 2]
        if new:
            m32[new >> 2] = nxt
        else:
            new = nxt
        m32[at] = new

    def _free_node(self, off: int) -> None:
        buf = self._buf
        _hn, _lp, _ln, _h, _e, _f, vlen, klen, vt, _c = node_unpack(buf, off)
        if vt == T_LIST:
            el = LHEAD.unpack_from(buf, off + value_offset(klen))[0]
            while el:
                nxt = u32_unpack(buf, el)[0]
                self._slab.free(el)
                el = nxt
        self._slab.free(off)

    def _remove(self, off: int) -> None:
        """Unlink node ``off`` from index and LRU and free it."""
        self._chain_replace(off, 0)
        self._lru_unlink(off)
        self._free_node(off)
        self._slab.m64[_ENTRIES] -= 1

    def _insert(self, off: int, h: int) -> None:
        m32 = self._m32
        slot = self._bidx + (h & self._mask)
        m32[off >> 2] = m32[slot]
        m32[slot] = off
        self._lru_push(off)
        self._slab.m64[_ENTRIES] += 1

    def _sweep(self, now: int, limit: int = 2) -> int:
        """Free up to ``limit`` expired entries at the LRU tail (stops at a live one)."""
        buf = self._buf
        freed = 0
        while freed < limit:
            tail = u32_unpack(buf, H_LRU + 4)[0]
            if not tail:
                break
            exp = i64_unpack(buf, tail + N_EXPIRES)[0]
            if not exp or exp > now:
                break
            self._remove(tail)
            freed += 1
        return freed

    def _alloc(self, size: int, safe: bool, protect: int) -> tuple[int, bool]:
        """Allocate, freeing expired entries and then (unless ``safe``) evicting LRU entries.

        Never evicts ``protect``.  Returns (offset or 0, forcible).
        """
        sl = self._slab
        off = sl.alloc(size)
        if off:
            return off, False
        buf = self._buf
        now = _now_ns() // 1_000_000
        cur = u32_unpack(buf, H_LRU + 4)[0]
        scanned = 0
        while cur and scanned < SWEEP_SCAN:
            prev = u32_unpack(buf, cur + 4)[0]
            exp = i64_unpack(buf, cur + N_EXPIRES)[0]
            if exp and exp <= now and cur != protect:
                self._remove(cur)
                off = sl.alloc(size)
                if off:
                    return off, False
            cur = prev
            scanned += 1
        if safe:
            return 0, False
        evicted = 0
        forcible = False
        while evicted < MAX_EVICT:
            victim = u32_unpack(buf, H_LRU + 4)[0]
            if victim == protect and victim:
                victim = u32_unpack(buf, victim + 4)[0]
            if not victim:
                break
            self._remove(victim)
            evicted += 1
            forcible = True
            off = sl.alloc(size)
            if off:
                break
        if evicted:
            U64.pack_into(buf, H_EVICTIONS, U64.unpack_from(buf, H_EVICTIONS)[0] + evicted)
        return off, forcible

    def _write_node(
        self, off: int, h: int, kb: bytes, vt: int, vb: bytes, exp: int, flags: int, size: int
    ) -> None:
        buf = self._buf
        n = len(kb)
        cls = _slab.size_class(size)
        NODE.pack_into(buf, off, 0, 0, 0, h, exp, flags, len(vb), n, vt, cls)
        buf[off + N_KEY : off + N_KEY + n] = kb
        vo = off + value_offset(n)
        buf[vo : vo + len(vb)] = vb

    def _store_locked(
        self, kb: bytes, h: int, vt: int, vb: bytes, exp: int, flags: int, mode: int, now: int
    ) -> tuple[bool, bool]:
        """Store with the lock held.  Returns (done, forcible); raises NoMemory."""
        buf = self._buf
        self._sweep(now)
        off = self._lookup(kb, h)
        vlen = len(vb)
        vrel = value_offset(len(kb))
        size = vrel + vlen
        if off:
            _hn, _lp, _ln, _h, oexp, _f, ovlen, _kl, ovt, ocls = node_unpack(buf, off)
            live = not oexp or oexp > now
            if mode == ADD or mode == SAFE_ADD:
                if live:
                    return False, False
            elif mode == REPLACE and not live:
                return False, False
            if ovt != T_LIST:
                cls = _slab.size_class(size)
                if cls == ocls and (cls != LARGE or self._slab.chunk_size(off) >= size):
                    # in place: the chunk fits and is of the right class; no allocation
                    u32_pack(buf, H_DIRTY, off)
                    NODE_META.pack_into(buf, off + N_EXPIRES, exp, flags, vlen)
                    buf[off + N_VTYPE] = vt
                    vo = off + vrel
                    buf[vo : vo + vlen] = vb
                    u32_pack(buf, H_DIRTY, 0)
                    self._touch(off)
                    return True, False
            self._touch(off)
        elif mode == REPLACE:
            return False, False
        if size > self._g.npages * PAGE:
            raise NoMemory()
        new, forcible = self._alloc(size, _SAFE[mode], off)
        if not new:
            raise NoMemory()
        self._write_node(new, h, kb, vt, vb, exp, flags, size)
        if off:
            self._chain_replace(off, new)
            self._lru_unlink(off)
            self._lru_push(new)
            self._free_node(off)
        else:
            self._insert(new, h)
        return True, forcible

    # ---- reads ------------------------------------------------------------------------------
    def get(self, key: str | bytes, default: Any = None) -> Any:
        """Value of ``key``, or ``default`` if missing or expired.  ``IsAList`` for a list."""
        kc = key.__class__
        kb = key.encode() if kc is str else key if kc is bytes else _key_slow(key)
        buf = self._buf
        m32 = self._m32
        off = self._lookup(kb, crc32(kb), False, True)  # takes the lock
        try:
            if off:
                lp, exp, _f, vlen, kl, vt, _c = _state_unpack(buf, off)
                if not exp or exp > _now_ns() // 1_000_000:
                    vo = off + ((kl + VALUE_PAD) & ~7)  # value_offset(kl)
                    if vt == T_INT:
                        v = self._mq[vo >> 3]
                    elif vt == T_STR:
                        v = buf[vo : vo + vlen].decode()
                    else:
                        v = _decode(buf, vo, vt, vlen)
                    if lp:
                        self._touch(off)
                    self._hits = c = self._hits + 1
                    if c > HIT_FLUSH:
                        self._flush_counts()
                    return v
            else:
                # only a key of 1..65535 bytes can be found: the length is checked on a miss
                n = len(kb)
                if not 0 < n < 65536:
                    _bad_key_len(n)
            self._misses = c = self._misses + 1
            if c > HIT_FLUSH:
                self._flush_counts()
            return default
        finally:
            m32[_OWNER] = 0
            self._release()

    def _peek(self, key: str | bytes, stale: bool) -> tuple[Any, int, int] | None:
        """(value, flags, expired) or None if absent; IsAList for lists.

        ``stale``: an expired entry's value too (``get_stale``); else an expired entry is
        ``(None, 0, True)`` whatever its type, as nginx's ``get`` (an expired list is not an
        error), and a live one moves to the LRU head."""
        buf = self._buf
        off = self._enter(key)
        try:
            if not off:
                self._misses += 1
                return None
            _hn, _lp, _ln, _h, exp, flags, vlen, kl, vt, _c = node_unpack(buf, off)
            if exp and exp <= _now_ns() // 1_000_000:
                self._misses += 1
                if not stale:
                    return None, 0, True
                return _decode(buf, off + value_offset(kl), vt, vlen), flags, True
            v = _decode(buf, off + value_offset(kl), vt, vlen)
            self._hits += 1
            if not stale:
                self._touch(off)
            return v, flags, False
        finally:
            self._unlock()

    @staticmethod
    def _key(key: str | bytes) -> bytes:
        kc = key.__class__
        kb = key.encode() if kc is str else key if kc is bytes else _key_slow(key)
        n = len(kb)
        if not 0 < n < 65536:
            _bad_key_len(n)
        return kb

    def get_with_flags(self, key: str | bytes) -> tuple[Any, int]:
        """``(value, flags)``, or ``(None, 0)`` if missing or expired."""
        r = self._peek(key, False)
        if r is None or r[2]:
            return None, 0
        return r[0], r[1]

    def get_stale(self, key: str | bytes) -> tuple[Any, int, bool]:
        """``(value, flags, stale)``; an expired, not yet reclaimed entry has ``stale=True``.
        ``(None, 0, False)`` if missing."""
        r = self._peek(key, True)
        if r is None:
            return None, 0, False
        return r[0], r[1], bool(r[2])

    def ttl(self, key: str | bytes) -> float:
        """Seconds left (ms resolution), 0 for no expiry; ``NotFound`` if missing/expired."""
        off = self._enter(key)
        try:
            if off:
                exp = i64_unpack(self._buf, off + N_EXPIRES)[0]
                if not exp:
                    return 0
                left = exp - _now_ns() // 1_000_000
                if left > 0:
                    return left / 1000
        finally:
            self._unlock()
        raise NotFound()

    def llen(self, key: str | bytes) -> int:
        """Length of the list at ``key``; 0 if missing; ``NotAList`` for a scalar."""
        buf = self._buf
        off = self._enter(key)
        try:
            if not off:
                return 0
            _hn, _lp, _ln, _h, exp, _f, _vl, kl, vt, _c = node_unpack(buf, off)
            if exp and exp <= _now_ns() // 1_000_000:
                return 0
            if vt != T_LIST:
                raise NotAList()
            return LHEAD.unpack_from(buf, off + value_offset(kl))[2]
        finally:
            self._unlock()

    def __contains__(self, key: object) -> bool:
        off = self._enter(key)  # type: ignore[arg-type]
        try:
            if not off:
                return False
            exp = i64_unpack(self._buf, off + N_EXPIRES)[0]
            return not exp or exp > _now_ns() // 1_000_000
        finally:
            self._unlock()

    def __getitem__(self, key: str | bytes) -> Any:
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def __setitem__(self, key: str | bytes, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str | bytes) -> None:
        if not self._delete(key):
            raise KeyError(key)

    # ---- writes -----------------------------------------------------------------------------
    def _write(
        self, key: str | bytes, value: Any, exptime: float, flags: int, mode: int
    ) -> tuple[bool, bool]:
        kb = self._key(key)
        if value is None:
            if mode == SET or mode == SAFE_SET:
                self._delete(kb)
                return True, False
            raise TypeError("attempt to add or replace None")
        vt, vb = _encode(value)
        ms = _exptime_ms(exptime) if exptime else 0
        if flags:
            _check_flags(flags)
        if node_size(len(kb), len(vb)) > self._g.npages * PAGE:
            raise NoMemory()
        h = crc32(kb)
        self._lock_()
        try:
            now = _now_ns() // 1_000_000
            return self._store_locked(kb, h, vt, vb, now + ms if ms else 0, flags, mode, now)
        finally:
            self._unlock()

    def set(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Store ``value`` (None deletes).  Returns ``forcible``: True if live entries were
        evicted to make room.  ``NoMemory`` if it does not fit; the old value then stays."""
        kc = key.__class__
        kb = key.encode() if kc is str else key if kc is bytes else _key_slow(key)
        n = len(kb)
        if not 0 < n < 65536:
            _bad_key_len(n)
        vc = value.__class__
        if vc is str:
            vb = value.encode()
            vt = T_STR
        elif vc is int and I64_MIN <= value <= I64_MAX:
            vb = _i64_pack_b(value)
            vt = T_INT
        elif value is None:
            self._delete(kb)
            return False
        else:
            vt, vb = _encode(value)
        ms = _exptime_ms(exptime) if exptime else 0
        if flags:
            _check_flags(flags)
        vlen = len(vb)
        vrel = (n + VALUE_PAD) & ~7  # value_offset(n), inline on this hot path
        size = vrel + vlen
        if size > MAX_SMALL:
            return self._write(kb, value, exptime, flags, SET)[1]
        cls = SIZE2CLS[(size + 15) >> 4]
        h = crc32(kb)
        buf = self._buf
        m32 = self._m32
        off = self._lookup(kb, h, False, True)  # takes the lock
        try:
            if off:
                lp, oe, of, ovl, _kl, ovt, ocls = _state_unpack(buf, off)
                if ocls == cls and ovt != T_LIST:
                    vo = off + vrel
                    if (
                        ovt == vt
                        and (vt == T_INT or vt == T_FLOAT)
                        and not (oe or of or ms or flags)
                    ):
                        # a number over a number, no expiry or flags: one aligned 8-byte store
                        if vt == T_INT:
                            self._mq[vo >> 3] = value
                        else:
                            self._md[vo >> 3] = value
                    else:
                        # in place: same size class, nothing to allocate, cannot fail
                        m32[_DIRTY] = off
                        if not (ovt == vt and ovl == vlen and of == flags and not (oe or ms)):
                            exp = _now_ns() // 1_000_000 + ms if ms else 0
                            _tail_pack(buf, off + N_EXPIRES, exp, flags, vlen, n, vt, cls)
                        buf[vo : vo + vlen] = vb  # else only the bytes change
                        m32[_DIRTY] = 0
                    if lp:
                        self._touch(off)
                    return False
            now = _now_ns() // 1_000_000
            return self._store_locked(kb, h, vt, vb, now + ms if ms else 0, flags, SET, now)[1]
        finally:
            m32[_OWNER] = 0
            self._release()

    def safe_set(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> None:
        """Like :meth:`set` but never evicts live entries; ``NoMemory`` when full."""
        self._write(key, value, exptime, flags, SAFE_SET)

    def add(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Store only if ``key`` is absent or expired; True if added, False if it exists."""
        return self._write(key, value, exptime, flags, ADD)[0]

    def safe_add(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Like :meth:`add` but never evicts live entries; ``NoMemory`` when full."""
        return self._write(key, value, exptime, flags, SAFE_ADD)[0]

    def replace(self, key: str | bytes, value: Any, exptime: float = 0, flags: int = 0) -> bool:
        """Store only if ``key`` is live; True if replaced, False if missing or expired."""
        return self._write(key, value, exptime, flags, REPLACE)[0]

    def _delete(self, key: str | bytes) -> bool:
        off = self._enter(key)
        try:
            if not off:
                return False
            exp = i64_unpack(self._buf, off + N_EXPIRES)[0]
            self._remove(off)
            return not exp or exp > _now_ns() // 1_000_000
        finally:
            self._unlock()

    def delete(self, key: str | bytes) -> None:
        """Remove ``key``; a missing key is not an error."""
        self._delete(key)

    def incr_hit_path(self) -> tuple[Any, int] | None:
        """incr's common call without incr's Python frame, for a caller on a hot path.

        Returns ``(fast, pid)``: ``fast(key, delta, init, init_ttl, pid)`` gives what
        ``incr(key, delta, init, init_ttl)`` gives, or None when it changed nothing and the
        caller must call ``incr`` itself (a miss, an expired or non-integer entry, a str key,
        a busy lock…). None when there is no such call (a private buffer, the accelerator off,
        a closed dict, a test's replacement clock). Valid in this process while the dict is
        open: ``pid`` is this process's id (ask again after a fork).
        """
        fast = self._fincr
        if fast is None or _now_ns is not _monotonic_ns:
            return None
        return fast, _pid

    def incr(
        self,
        key: str | bytes,
        delta: int | float = 1,
        init: int | float | None = None,
        init_ttl: float = 0,
    ) -> int | float:
        """Add ``delta`` to the number at ``key`` and return the new value.

        Missing/expired key: ``NotFound`` unless ``init`` is given, then ``init + delta`` is
        stored with expiry ``init_ttl`` and flags 0.  Keeps the entry's expiry and flags.
        ``NotANumber`` for a non-number, ``OverflowError`` past 64 bits, ``ValueError`` for
        ``init_ttl`` without ``init`` or a negative ``init_ttl``.
        """
        fast = self._fincr
        if fast is not None and _now_ns is _monotonic_ns:
            # the common call, all in C (argument checks and lock included): a bytes key, an
            # int delta, a live int entry; anything else (None back) takes the full path
            # below. Not while a test replaces this module's clock: the C code reads
            # CLOCK_MONOTONIC itself.
            v = fast(key, delta, init, init_ttl, _pid)
            if v is not None:
                return v
        kc = key.__class__
        kb = key.encode() if kc is str else key if kc is bytes else _key_slow(key)
        n = len(kb)
        if not 0 < n < 65536:
            _bad_key_len(n)
        if kc is str and fast is not None and _now_ns is _monotonic_ns:
            v = fast(kb, delta, init, init_ttl, _pid)  # a str key: the C call with its bytes
            if v is not None:
                return v
        dc = delta.__class__
        if dc is not int and dc is not float:
            if isinstance(delta, bool) or not isinstance(delta, (int, float)):
                raise TypeError("delta must be an int or float")
            delta = float(delta) if isinstance(delta, float) else int(delta)
            dc = delta.__class__
        if init_ttl:
            if init_ttl < 0:
                raise ValueError('bad "init_ttl" argument')
            if init is None:
                raise ValueError('must provide "init" when providing "init_ttl"')
        if init is not None:
            ic = init.__class__
            if ic is not int and ic is not float:
                if isinstance(init, bool) or not isinstance(init, (int, float)):
                    raise TypeError("init must be an int or float")
        h = crc32(kb)
        buf = self._buf
        m32 = self._m32
        off = self._lookup(kb, h, False, True)  # takes the lock
        try:
            aincr = self._aincr
            # a live int entry: done in C (else None), which reads CLOCK_MONOTONIC itself, so
            # not while a test replaces this module's clock
            if off and aincr is not None and dc is int and _now_ns is _monotonic_ns:
                v = aincr(kb, h, delta)
                if v is not None:
                    return v
            if off:
                lp, exp, _f, _vl, kl, vt, _c = _state_unpack(buf, off)
                if not exp or exp > _now_ns() // 1_000_000:
                    vi = (off + ((kl + VALUE_PAD) & ~7)) >> 3  # value_offset(kl), 8-aligned
                    if vt == T_INT:
                        mq = self._mq
                        if dc is int:
                            v = mq[vi] + delta
                            if v > I64_MAX or v < I64_MIN:
                                raise OverflowError("incr result does not fit in 64 bits")
                            mq[vi] = v  # one aligned 8-byte store: never torn by a kill
                        else:
                            v = mq[vi] + delta
                            m32[_DIRTY] = off
                            self._md[vi] = v
                            buf[off + N_VTYPE] = T_FLOAT
                            m32[_DIRTY] = 0
                    elif vt == T_FLOAT:
                        md = self._md
                        v = md[vi] + delta
                        md[vi] = v
                    else:
                        raise NotANumber()
                    if lp:
                        self._touch(off)
                    return v
            if init is None:
                raise NotFound()
            v = init + delta
            vt, vb = _encode(v)
            ms = _exptime_ms(init_ttl) if init_ttl else 0
            now = _now_ns() // 1_000_000
            self._store_locked(kb, h, vt, vb, now + ms if ms else 0, 0, SET, now)
            return v
        finally:
            m32[_OWNER] = 0
            self._release()

    def expire(self, key: str | bytes, exptime: float) -> bool:
        """Set a new expiry (0 = never) on a live key; False if missing or expired."""
        off = self._enter(key)
        try:
            ms = _exptime_ms(exptime)
            if not off:
                return False
            now = _now_ns() // 1_000_000
            exp = i64_unpack(self._buf, off + N_EXPIRES)[0]
            if exp and exp <= now:
                return False
            i64_pack(self._buf, off + N_EXPIRES, now + ms if ms else 0)
            return True
        finally:
            self._unlock()

    # ---- lists ------------------------------------------------------------------------------
    def _push(self, key: str | bytes, value: Any, left: bool) -> int:
        kb = self._key(key)
        if value is None:
            raise TypeError("bad value type NoneType")
        vt, vb = _encode(value)
        esize = ELEM_SIZE + len(vb)
        if esize > self._g.npages * PAGE:
            raise NoMemory()
        h = crc32(kb)
        buf = self._buf
        self._lock_()
        try:
            now = _now_ns() // 1_000_000
            self._sweep(now)
            off = self._lookup(kb, h)
            created = False
            if off:
                exp = i64_unpack(buf, off + N_EXPIRES)[0]
                if exp and exp <= now:
                    self._remove(off)
                    off = 0
                elif buf[off + N_VTYPE] != T_LIST:
                    raise NotAList()
            if not off:
                size = node_size(len(kb), LHEAD.size)
                off = self._alloc(size, True, 0)[0]
                if not off:
                    raise NoMemory()
                self._write_node(off, h, kb, T_LIST, bytes(LHEAD.size), 0, 0, size)
                self._insert(off, h)
                created = True
            el = self._alloc(esize, True, off)[0]
            if not el:
                if created:
                    self._remove(off)
                raise NoMemory()
            ho = off + value_offset(len(kb))
            first, last, length = LHEAD.unpack_from(buf, ho)
            m32 = self._m32
            if left:
                ELEM.pack_into(buf, el, first, 0, len(vb), vt)
                if first:
                    m32[(first >> 2) + 1] = el
                else:
                    last = el
                first = el
            else:
                ELEM.pack_into(buf, el, 0, last, len(vb), vt)
                if last:
                    m32[last >> 2] = el
                else:
                    first = el
                last = el
            buf[el + ELEM_SIZE : el + esize] = vb
            length += 1
            LHEAD.pack_into(buf, ho, first, last, length)
            self._touch(off)
            return length
        finally:
            self._unlock()

    def lpush(self, key: str | bytes, value: Any) -> int:
        """Push ``value`` at the head of the list at ``key``; the new length.  Never evicts
        live entries: ``NoMemory`` when full; ``NotAList`` if ``key`` holds a scalar."""
        return self._push(key, value, True)

    def rpush(self, key: str | bytes, value: Any) -> int:
        """Push ``value`` at the tail of the list at ``key``; see :meth:`lpush`."""
        return self._push(key, value, False)

    def _pop(self, key: str | bytes, left: bool) -> Any:
        buf = self._buf
        off = self._enter(key)
        try:
            if not off:
                return None
            now = _now_ns() // 1_000_000
            _hn, _lp, _ln, _h, exp, _f, _vl, kl, vt, _c = node_unpack(buf, off)
            if exp and exp <= now:
                self._remove(off)
                return None
            if vt != T_LIST:
                raise NotAList()
            ho = off + value_offset(kl)
            first, last, length = LHEAD.unpack_from(buf, ho)
            el = first if left else last
            nxt, prev, vlen, evt = ELEM.unpack_from(buf, el)
            v = _decode(buf, el + ELEM_SIZE, evt, vlen)
            length -= 1
            if not length:
                self._remove(off)
                return v
            if left:
                first = nxt
                self._m32[(nxt >> 2) + 1] = 0
            else:
                last = prev
                self._m32[prev >> 2] = 0
            LHEAD.pack_into(buf, ho, first, last, length)
            self._slab.free(el)
            self._touch(off)
            return v
        finally:
            self._unlock()

    def lpop(self, key: str | bytes) -> Any:
        """Pop from the head of the list; None if missing.  Popping the last element deletes
        the key.  ``NotAList`` for a scalar."""
        return self._pop(key, True)

    def rpop(self, key: str | bytes) -> Any:
        """Pop from the tail of the list; see :meth:`lpop`."""
        return self._pop(key, False)

    # ---- whole-zone operations --------------------------------------------------------------
    def flush_all(self) -> None:
        """Remove every entry at once; all memory is reusable immediately."""
        self._lock_()
        try:
            self._format(keep_stats=True)
        finally:
            self._unlock()

    def _scan(self, fn) -> None:
        """Call ``fn(off, now)`` for each node, SCAN_BUCKETS buckets per lock hold; stop when
        it returns True.  ``fn`` may remove the node it is given."""
        buf = self._buf
        nb = self._g.nbuckets
        idx = self._index
        b = 0
        while b < nb:
            self._lock_()
            try:
                now = _now_ns() // 1_000_000
                end = min(nb, b + SCAN_BUCKETS)
                while b < end:
                    off = u32_unpack(buf, idx + (b << 2))[0]
                    while off:
                        nxt = u32_unpack(buf, off)[0]
                        if fn(off, now):
                            return
                        off = nxt
                    b += 1
            finally:
                self._unlock()
            # let waiters (and other greenlets) in between batches
            for _ in range(10):
                if not u32_unpack(buf, H_WANT)[0]:
                    break
                time.sleep(0.0001)
            time.sleep(0)

    def get_keys(self, max_count: int = 1024) -> list[str | bytes]:
        """Up to ``max_count`` live keys (0 = all), as str (bytes if not valid UTF-8).

        Scans in batches, releasing the lock in between, so keys written meanwhile may or may
        not be included."""
        if max_count < 0:
            raise ValueError("max_count must be >= 0")
        keys: list[str | bytes] = []
        buf = self._buf

        def visit(off: int, now: int) -> bool:
            exp = i64_unpack(buf, off + N_EXPIRES)[0]
            if not exp or exp > now:
                kl = NODE.unpack_from(buf, off)[7]
                kb = bytes(buf[off + N_KEY : off + N_KEY + kl])
                try:
                    keys.append(kb.decode())
                except UnicodeDecodeError:
                    keys.append(kb)
                if max_count and len(keys) >= max_count:
                    return True
            return False

        self._scan(visit)
        return keys

    def flush_expired(self, max_count: int = 0) -> int:
        """Free expired entries, at most ``max_count`` (0 = all); the number freed."""
        if max_count < 0:
            raise ValueError("max_count must be >= 0")
        freed = 0
        buf = self._buf

        def visit(off: int, now: int) -> bool:
            nonlocal freed
            exp = i64_unpack(buf, off + N_EXPIRES)[0]
            if exp and exp <= now:
                self._remove(off)
                freed += 1
                return bool(max_count) and freed >= max_count
            return False

        self._scan(visit)
        return freed

    def capacity(self) -> int:
        """Zone size in bytes."""
        return self._g.total

    def free_space(self) -> int:
        """Bytes in wholly free pages (as nginx); small items may still fit when it is 0."""
        return u32_unpack(self._buf, H_FREERUN + 4)[0] * PAGE

    def stats(self) -> dict[str, int]:
        """``capacity``, ``used`` (bytes in allocated chunks), ``free`` (= free_space),
        ``entries`` (incl. expired not yet reclaimed), ``evictions``, ``hits``, ``misses``
        (each process adds its counts to the zone at least every 1024 lookups)."""
        self._lock_()
        try:
            self._flush_counts()
            entries, ev, hits, misses, used = STATS.unpack_from(self._buf, H_ENTRIES)
            free = u32_unpack(self._buf, H_FREERUN + 4)[0] * PAGE
        finally:
            self._unlock()
        return {
            "capacity": self._g.total,
            "used": used,
            "free": free,
            "entries": entries,
            "evictions": ev,
            "hits": hits,
            "misses": misses,
        }

    def verify(self) -> list[str]:
        """Check every structural invariant; a list of problems (empty = sound)."""
        self._lock_()
        try:
            return verify_zone(self._buf, self._g)
        finally:
            self._unlock()

    def owner(self) -> int:
        """Pid currently holding the lock, 0 if none (diagnostics)."""
        return u32_unpack(self._buf, H_OWNER)[0]


__all__ = ["SharedDict", "CLASSES"]
