"""Slab allocator over the data pages of a zone (the nginx ngx_slab design, simplified).

* Requests up to 2048 bytes are rounded up to a size class (``layout.CLASSES``).  Each class
  owns whole pages, carved lazily into chunks; freed chunks go on a doubly linked per-class
  free list (prev/next u32 in the chunk's first 8 bytes).  A page whose chunks are all free
  goes back to the free-page pool at once.
* Bigger requests take ``ceil(size / 4096)`` contiguous pages, first fit, from a list of free
  page runs; freed runs merge with free neighbours on both sides.

All state is in the buffer (header, page descriptors, chunks).  Callers hold the zone lock.
"""

from __future__ import annotations

from .layout import (
    CLASSES,
    H_CLS_CARVE,
    H_CLS_FREE,
    H_FREERUN,
    H_USED,
    LARGE,
    MAX_SMALL,
    PAGE,
    PAGE_SHIFT,
    PD_SIZE,
    PER_PAGE,
    PG_CONT,
    PG_FREE,
    PG_LARGE,
    PG_SLAB,
    SIZE2CLS,
    U16,
    U64,
    Geometry,
    U16x2,
    U32x2,
    aligned_view,
    pd_pack,
    pd_unpack,
    u32_pack,
    u32_unpack,
)

_FREE_I = H_CLS_FREE >> 2
_USED_I = H_USED >> 3


def size_class(size: int) -> int:
    """Class index for a request of ``size`` bytes, or ``LARGE`` for page runs."""
    return SIZE2CLS[(size + 15) >> 4] if size <= MAX_SMALL else LARGE


def npages_for(size: int) -> int:
    """Pages taken by a large request of ``size`` bytes."""
    return (size + PAGE - 1) >> PAGE_SHIFT


class Slab:
    """Allocator bound to one buffer and geometry."""

    __slots__ = ("buf", "g", "data", "pd", "m16", "m32", "m64")

    def __init__(self, buf, g: Geometry) -> None:
        self.buf = buf
        self.g = g
        self.data = g.data_off
        self.pd = g.pd_off
        mv = aligned_view(buf)
        self.m16 = mv.cast("H")
        self.m32 = mv.cast("I")
        self.m64 = mv.cast("Q")

    def release(self) -> None:
        """Drop the memoryviews on the buffer (before unmapping it)."""
        for v in (self.m16, self.m32, self.m64):
            v.release()

    # ---- formatting -----------------------------------------------------------------------
    def format(self) -> None:
        """Make every page free and every class empty (one free run of all pages)."""
        buf, g = self.buf, self.g
        buf[self.pd : self.pd + g.npages * PD_SIZE] = bytes(g.npages * PD_SIZE)
        buf[H_CLS_FREE : H_CLS_CARVE + 4 * len(CLASSES)] = bytes(8 * len(CLASSES))
        U32x2.pack_into(buf, H_FREERUN, 0, 0)
        U64.pack_into(buf, H_USED, 0)
        self._free_run(0, g.npages)

    # ---- page runs ------------------------------------------------------------------------
    def _run_unlink(self, p: int, prev: int, nxt: int) -> None:
        buf, pd = self.buf, self.pd
        if prev:
            u32_pack(buf, pd + (prev - 1) * PD_SIZE + 16, nxt)
        else:
            u32_pack(buf, H_FREERUN, nxt)
        if nxt:
            u32_pack(buf, pd + (nxt - 1) * PD_SIZE + 12, prev)

    def _free_run(self, p: int, n: int) -> None:
        """Return pages [p, p+n) to the pool, merging with free neighbours."""
        buf, pd, npages = self.buf, self.pd, self.g.npages
        freed = n
        for i in range(p, p + n):
            pd_pack(buf, pd + i * PD_SIZE, PG_FREE, 0, 0, 0, 0, 0, 0, 0, 0)
        if p > 0:
            k, _c, _u, _cv, _x, _r, _pv, _nx, start = pd_unpack(buf, pd + (p - 1) * PD_SIZE)
            if k == PG_FREE:  # p-1 is the tail of a run starting at `start`
                _k, _c, _u, _cv, _x, run, prev, nxt, _s = pd_unpack(buf, pd + start * PD_SIZE)
                self._run_unlink(start, prev, nxt)
                n += p - start
                p = start
        q = p + n
        if q < npages:
            k, _c, _u, _cv, _x, run, prev, nxt, _s = pd_unpack(buf, pd + q * PD_SIZE)
            if k == PG_FREE:  # q is the head of a run
                self._run_unlink(q, prev, nxt)
                n += run
        head = u32_unpack(buf, H_FREERUN)[0]
        pd_pack(buf, pd + p * PD_SIZE, PG_FREE, 0, 0, 0, 0, n, 0, head, p)
        if n > 1:
            pd_pack(buf, pd + (p + n - 1) * PD_SIZE, PG_FREE, 0, 0, 0, 0, 0, 0, 0, p)
        if head:
            u32_pack(buf, pd + (head - 1) * PD_SIZE + 12, p + 1)
        count = u32_unpack(buf, H_FREERUN + 4)[0]
        U32x2.pack_into(buf, H_FREERUN, p + 1, count + freed)

    def _alloc_run(self, n: int) -> int:
        """Take n contiguous pages (first fit); page index, or -1 if no run is long enough."""
        buf, pd = self.buf, self.pd
        cur, count = U32x2.unpack_from(buf, H_FREERUN)
        if count < n:
            return -1
        while cur:
            p = cur - 1
            _k, _c, _u, _cv, _x, run, prev, nxt, _s = pd_unpack(buf, pd + p * PD_SIZE)
            if run >= n:
                if run == n:
                    self._run_unlink(p, prev, nxt)
                else:
                    r = p + n
                    pd_pack(
                        buf,
                        pd + r * PD_SIZE,
                        PG_FREE,
                        0,
                        0,
                        0,
                        0,
                        run - n,
                        prev,
                        nxt,
                        r if run - n == 1 else 0,
                    )
                    if run - n > 1:  # tail keeps pointing at the (new) head
                        u32_pack(buf, pd + (p + run - 1) * PD_SIZE + 20, r)
                    if prev:
                        u32_pack(buf, pd + (prev - 1) * PD_SIZE + 16, r + 1)
                    else:
                        u32_pack(buf, H_FREERUN, r + 1)
                    if nxt:
                        u32_pack(buf, pd + (nxt - 1) * PD_SIZE + 12, r + 1)
                u32_pack(buf, H_FREERUN + 4, u32_unpack(buf, H_FREERUN + 4)[0] - n)
                return p
            cur = nxt
        return -1

    def _reclaim(self) -> int:
        """Return the empty carve pages of all classes to the page pool; how many."""
        buf, pd = self.buf, self.pd
        n = 0
        for c in range(len(CLASSES)):
            co = H_CLS_CARVE + 4 * c
            cp = u32_unpack(buf, co)[0]
            if cp and U16.unpack_from(buf, pd + (cp - 1) * PD_SIZE + 2)[0] == 0:
                u32_pack(buf, co, 0)
                self._free_run(cp - 1, 1)
                n += 1
        return n

    # ---- chunks ---------------------------------------------------------------------------
    def alloc(self, size: int) -> int:
        """Allocate ``size`` bytes; the chunk offset, or 0 when there is no room."""
        buf = self.buf
        if size <= MAX_SMALL:
            c = SIZE2CLS[(size + 15) >> 4]
            cs = CLASSES[c]
            m32 = self.m32
            fi = _FREE_I + c
            off = m32[fi]
            if off:
                nxt = m32[(off >> 2) + 1]
                m32[fi] = nxt
                if nxt:
                    m32[nxt >> 2] = 0
                self.m16[(self.pd + ((off - self.data) >> PAGE_SHIFT) * PD_SIZE + 2) >> 1] += 1
            else:
                co = H_CLS_CARVE + 4 * c
                cp = u32_unpack(buf, co)[0]
                if cp:
                    po = self.pd + (cp - 1) * PD_SIZE
                    used, carved = U16x2.unpack_from(buf, po + 2)
                    off = self.data + ((cp - 1) << PAGE_SHIFT) + carved * cs
                    carved += 1
                    U16x2.pack_into(buf, po + 2, used + 1, carved)
                    if carved == PER_PAGE[c]:
                        u32_pack(buf, co, 0)
                else:
                    p = self._alloc_run(1)
                    if p < 0 and self._reclaim():
                        p = self._alloc_run(1)
                    if p < 0:
                        return 0
                    pd_pack(buf, self.pd + p * PD_SIZE, PG_SLAB, c, 1, 1, 0, 0, 0, 0, 0)
                    u32_pack(buf, co, p + 1 if PER_PAGE[c] > 1 else 0)
                    off = self.data + (p << PAGE_SHIFT)
            self.m64[_USED_I] += cs
            return off
        n = (size + PAGE - 1) >> PAGE_SHIFT
        p = self._alloc_run(n)
        if p < 0 and self._reclaim():
            p = self._alloc_run(n)
        if p < 0:
            return 0
        pd = self.pd
        pd_pack(buf, pd + p * PD_SIZE, PG_LARGE, LARGE, 0, 0, 0, n, 0, 0, p)
        for i in range(p + 1, p + n):
            pd_pack(buf, pd + i * PD_SIZE, PG_CONT, LARGE, 0, 0, 0, 0, 0, 0, p)
        U64.pack_into(buf, H_USED, U64.unpack_from(buf, H_USED)[0] + (n << PAGE_SHIFT))
        return self.data + (p << PAGE_SHIFT)

    def chunk_size(self, off: int) -> int:
        """Bytes available in the chunk at ``off``."""
        p = (off - self.data) >> PAGE_SHIFT
        k, c, _u, _cv, _x, run, _p, _n, _s = pd_unpack(self.buf, self.pd + p * PD_SIZE)
        return run << PAGE_SHIFT if k == PG_LARGE else CLASSES[c]

    def free(self, off: int) -> None:
        """Free the chunk at ``off``."""
        buf, pd, data = self.buf, self.pd, self.data
        p = (off - data) >> PAGE_SHIFT
        po = pd + p * PD_SIZE
        if buf[po] == PG_SLAB:
            c = buf[po + 1]
            cs = CLASSES[c]
            self.m64[_USED_I] -= cs
            ui = (po + 2) >> 1
            m16 = self.m16
            used = m16[ui]
            if used > 1:
                m32 = self.m32
                fi = _FREE_I + c
                head = m32[fi]
                oi = off >> 2
                m32[oi] = 0
                m32[oi + 1] = head
                if head:
                    m32[head >> 2] = off
                m32[fi] = off
                m16[ui] = used - 1
                return
        k, c, used, carved, _x, run, _p, _n, _s = pd_unpack(buf, po)
        if k == PG_LARGE:
            U64.pack_into(buf, H_USED, U64.unpack_from(buf, H_USED)[0] - (run << PAGE_SHIFT))
            self._free_run(p, run)
            return
        cs = CLASSES[c]
        fo = H_CLS_FREE + 4 * c
        if used == 1:  # page becomes empty: pull its other chunks off the free list
            base = data + (p << PAGE_SHIFT)
            for i in range(carved):
                ch = base + i * cs
                if ch != off:
                    prev, nxt = U32x2.unpack_from(buf, ch)
                    if prev:
                        u32_pack(buf, prev + 4, nxt)
                    else:
                        u32_pack(buf, fo, nxt)
                    if nxt:
                        u32_pack(buf, nxt, prev)
            co = H_CLS_CARVE + 4 * c
            cp = u32_unpack(buf, co)[0]
            if cp == p + 1 or not cp:
                # keep one empty page per class as its carve page (no page churn when a
                # class goes empty and back); _reclaim() returns these when pages run out
                U16x2.pack_into(buf, po + 2, 0, 0)
                u32_pack(buf, co, p + 1)
                return
            self._free_run(p, 1)
            return
        head = u32_unpack(buf, fo)[0]
        U32x2.pack_into(buf, off, 0, head)
        if head:
            u32_pack(buf, head, off)
        u32_pack(buf, fo, off)
        U16.pack_into(buf, po + 2, used - 1)
