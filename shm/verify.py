"""Structure check of a zone: every invariant the dict and the allocator rely on.

Used after a lock take-over (a process died inside the lock) and by tests.  Runs in
O(pages + entries + list elements) with the lock held by the caller.
"""

from __future__ import annotations

from zlib import crc32

from . import layout

_MAX_PROBLEMS = 20


class _Damaged(Exception):
    pass


def verify_zone(buf, g: layout.Geometry) -> list[str]:
    """Return a list of problems found in the zone in ``buf`` (empty if sound)."""
    problems: list[str] = []

    def bad(msg: str) -> None:
        problems.append(msg)
        if len(problems) >= _MAX_PROBLEMS:
            raise _Damaged

    try:
        _verify(buf, g, bad)
    except _Damaged:
        pass
    except Exception as e:  # any out-of-range read etc. means damage
        problems.append(f"verify failed: {e!r}")
    return problems


def _verify(buf, g: layout.Geometry, bad) -> None:
    try:
        g2 = layout.Geometry.read(buf)
    except ValueError as e:
        bad(str(e))
        raise _Damaged from None
    if (g2.total, g2.nbuckets, g2.npages, g2.data_off) != (
        g.total,
        g.nbuckets,
        g.npages,
        g.data_off,
    ):
        bad("geometry changed")
        raise _Damaged
    npages, data, pdo = g.npages, g.data_off, g.pd_off
    pds = [layout.PD.unpack_from(buf, pdo + i * layout.PD_SIZE) for i in range(npages)]

    # ---- pages: free runs, large runs, slab pages
    in_run = [False] * npages
    cur, fcount = layout.U32x2.unpack_from(buf, layout.H_FREERUN)
    prev = 0
    total_free = 0
    hops = 0
    while cur:
        hops += 1
        if hops > npages or cur > npages:
            bad("free page run list broken")
            raise _Damaged
        p = cur - 1
        kind, _c, _u, _cv, _x, run, rprev, rnext, start = pds[p]
        if kind != layout.PG_FREE or run < 1 or p + run > npages:
            bad(f"free run at page {p} invalid")
            raise _Damaged
        if rprev != prev:
            bad(f"free run at page {p} has wrong prev link")
        if pds[p + run - 1][8] != p:
            bad(f"free run at page {p} has wrong tail")
        for i in range(p, p + run):
            if pds[i][0] != layout.PG_FREE or in_run[i]:
                bad(f"page {i} in free run at {p} not free or in two runs")
            in_run[i] = True
        total_free += run
        prev = cur
        cur = rnext
    if total_free != fcount:
        bad(f"free page count {fcount} != {total_free} pages in runs")
    owner_large = [-1] * npages
    for p, (kind, c, used, carved, _x, run, _pv, _nx, start) in enumerate(pds):
        if kind == layout.PG_FREE:
            if not in_run[p]:
                bad(f"free page {p} not in any run")
        elif kind == layout.PG_LARGE:
            if run < 1 or p + run > npages:
                bad(f"large run at page {p} has bad length {run}")
                continue
            for i in range(p + 1, p + run):
                if pds[i][0] != layout.PG_CONT or pds[i][8] != p:
                    bad(f"page {i} should continue large run at {p}")
                owner_large[i] = p
        elif kind == layout.PG_CONT:
            if owner_large[p] < 0 and not (
                0 <= start < p and pds[start][0] == layout.PG_LARGE and start + pds[start][5] > p
            ):
                bad(f"orphan continuation page {p}")
        elif kind == layout.PG_SLAB:
            empty_carve = (
                used == 0
                and carved == 0
                and c < layout.NCLS
                and layout.U32.unpack_from(buf, layout.H_CLS_CARVE + 4 * c)[0] == p + 1
            )
            if (
                c >= layout.NCLS
                or carved > layout.PER_PAGE[c]
                or used > carved
                or (used == 0 and not empty_carve)
            ):
                bad(f"slab page {p} has bad class/used/carved {c}/{used}/{carved}")
        else:
            bad(f"page {p} has unknown kind {kind}")

    def chunk(off: int, need: int, what: str) -> int:
        """Page index of a valid allocated chunk of >= need bytes, else -1."""
        if off < data or off >= data + (npages << layout.PAGE_SHIFT):
            bad(f"{what} offset {off} outside the data pages")
            return -1
        p = (off - data) >> layout.PAGE_SHIFT
        kind, c, _u, carved, _x, run, _pv, _nx, _s = pds[p]
        rel = off - data - (p << layout.PAGE_SHIFT)
        if kind == layout.PG_SLAB and c < layout.NCLS:
            cs = layout.CLASSES[c]
            if rel % cs or rel // cs >= carved:
                bad(f"{what} {off} is not a carved chunk")
                return -1
            if need > cs:
                bad(f"{what} {off} needs {need} bytes in a {cs}-byte chunk")
                return -1
            return p
        if kind == layout.PG_LARGE and rel == 0:
            if need > run << layout.PAGE_SHIFT:
                bad(f"{what} {off} larger than its pages")
                return -1
            return p
        bad(f"{what} {off} not in an allocated chunk")
        return -1

    # ---- free chunk lists
    free_chunks: set[int] = set()
    free_per_page: dict[int, int] = {}
    for c in range(layout.NCLS):
        cur = layout.U32.unpack_from(buf, layout.H_CLS_FREE + 4 * c)[0]
        prev = 0
        while cur:
            if cur in free_chunks:
                bad(f"class {c} free list loops or shares chunk {cur}")
                break
            if cur < data or cur >= data + (npages << layout.PAGE_SHIFT):
                bad(f"class {c} free chunk {cur} out of range")
                break
            p = (cur - data) >> layout.PAGE_SHIFT
            kind, pc, _u, carved, *_ = pds[p]
            rel = cur - data - (p << layout.PAGE_SHIFT)
            if (
                kind != layout.PG_SLAB
                or pc != c
                or rel % layout.CLASSES[c]
                or rel // layout.CLASSES[c] >= carved
            ):
                bad(f"class {c} free chunk {cur} not a chunk of that class")
                break
            fprev, fnext = layout.U32x2.unpack_from(buf, cur)
            if fprev != prev:
                bad(f"class {c} free chunk {cur} has wrong prev link")
            free_chunks.add(cur)
            free_per_page[p] = free_per_page.get(p, 0) + 1
            prev = cur
            cur = fnext
        cp = layout.U32.unpack_from(buf, layout.H_CLS_CARVE + 4 * c)[0]
        if cp:
            if (
                cp > npages
                or pds[cp - 1][0] != layout.PG_SLAB
                or pds[cp - 1][1] != c
                or pds[cp - 1][3] >= layout.PER_PAGE[c]
            ):
                bad(f"class {c} carve page {cp - 1} invalid")

    # ---- hash index and nodes
    used_chunks: dict[int, int] = {}  # chunk offset -> page
    nodes: set[int] = set()
    keys: set[bytes] = set()
    max_nodes = (npages << layout.PAGE_SHIFT) // 16 + 1
    mask = g.mask

    def use(off: int, p: int, what: str) -> bool:
        if off in used_chunks or off in free_chunks:
            bad(f"{what} {off} used twice or also free")
            return False
        used_chunks[off] = p
        return True

    for b in range(g.nbuckets):
        off = layout.U32.unpack_from(buf, g.index_off + 4 * b)[0]
        while off:
            if off in nodes or len(nodes) > max_nodes:
                bad(f"hash chain of bucket {b} loops")
                raise _Damaged
            p = chunk(off, layout.NODE_SIZE, "node")
            if p < 0:
                raise _Damaged
            hn, _lp, _ln, h, exp, _fl, vlen, klen, vt, cls = layout.NODE.unpack_from(buf, off)
            need = layout.node_size(klen, vlen)
            if klen == 0 or chunk(off, need, "node") < 0:
                raise _Damaged
            kb = bytes(buf[off + layout.N_KEY : off + layout.N_KEY + klen])
            if crc32(kb) != h or (h & mask) != b:
                bad(f"node {off} key hash does not match bucket {b}")
            if kb in keys:
                bad(f"key {kb[:40]!r} stored twice")
            keys.add(kb)
            want_cls = pds[p][1] if pds[p][0] == layout.PG_SLAB else layout.LARGE
            if cls != want_cls:
                bad(f"node {off} class byte {cls} != page class {want_cls}")
            vo = off + layout.value_offset(klen)
            if vt in (layout.T_INT, layout.T_FLOAT):
                if vlen != 8:
                    bad(f"node {off} number of {vlen} bytes")
            elif vt == layout.T_BOOL:
                if vlen != 1:
                    bad(f"node {off} bool of {vlen} bytes")
            elif vt == layout.T_STR:
                try:
                    bytes(buf[vo : vo + vlen]).decode()
                except UnicodeDecodeError:
                    bad(f"node {off} str value is not UTF-8")
            elif vt == layout.T_LIST:
                if vlen != layout.LHEAD.size:
                    bad(f"node {off} list head of {vlen} bytes")
                else:
                    _verify_list(buf, off, vo, chunk, use, bad)
            elif vt != layout.T_BYTES:
                bad(f"node {off} has unknown value type {vt}")
            if not use(off, p, "node"):
                raise _Damaged
            nodes.add(off)
            off = hn

    # ---- LRU
    head, tail = layout.U32x2.unpack_from(buf, layout.H_LRU)
    cur, prev, count = head, 0, 0
    while cur:
        if cur not in nodes:
            bad(f"LRU holds {cur}, which is not an indexed node")
            raise _Damaged
        count += 1
        if count > len(nodes):
            bad("LRU list loops")
            raise _Damaged
        lp, ln = layout.U32x2.unpack_from(buf, cur + 4)
        if lp != prev:
            bad(f"LRU node {cur} has wrong prev link")
        prev, cur = cur, ln
    if prev != tail:
        bad("LRU tail is wrong")
    if count != len(nodes):
        bad(f"LRU has {count} nodes, index has {len(nodes)}")
    entries = layout.U64.unpack_from(buf, layout.H_ENTRIES)[0]
    if entries != len(nodes):
        bad(f"entry count {entries} != {len(nodes)} nodes")

    # ---- accounting
    used_per_page: dict[int, int] = {}
    used_bytes = 0
    for p in used_chunks.values():
        used_per_page[p] = used_per_page.get(p, 0) + 1
    for p, (kind, c, used, carved, _x, run, *_r) in enumerate(pds):
        if kind == layout.PG_SLAB and c < layout.NCLS:
            u = used_per_page.get(p, 0)
            f = free_per_page.get(p, 0)
            if u != used or u + f != carved:
                bad(f"slab page {p}: used {used}/carved {carved} but {u} in use, {f} free")
            used_bytes += used * layout.CLASSES[c]
        elif kind == layout.PG_LARGE:
            if used_per_page.get(p, 0) != 1:
                bad(f"large run at page {p} not owned by exactly one entry")
            used_bytes += run * layout.PAGE
    hdr_used = layout.U64.unpack_from(buf, layout.H_USED)[0]
    if hdr_used != used_bytes:
        bad(f"used bytes {hdr_used} != {used_bytes}")


def _verify_list(buf, off: int, ho: int, chunk, use, bad) -> None:
    first, last, length = layout.LHEAD.unpack_from(buf, ho)
    cur, prev, count = first, 0, 0
    while cur:
        count += 1
        if count > length:
            bad(f"list at node {off} longer than its length {length}")
            raise _Damaged
        p = chunk(cur, layout.ELEM_SIZE, "list element")
        if p < 0:
            raise _Damaged
        nxt, eprev, vlen, vt = layout.ELEM.unpack_from(buf, cur)
        if chunk(cur, layout.ELEM_SIZE + vlen, "list element") < 0:
            raise _Damaged
        if eprev != prev:
            bad(f"list element {cur} has wrong prev link")
        if vt not in (layout.T_BOOL, layout.T_INT, layout.T_FLOAT, layout.T_STR, layout.T_BYTES):
            bad(f"list element {cur} has bad type {vt}")
        if not use(cur, p, "list element"):
            raise _Damaged
        prev, cur = cur, nxt
    if count != length or prev != last or length == 0:
        bad(f"list at node {off}: {count} elements, length {length}, last ok={prev == last}")
