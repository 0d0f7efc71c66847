"""Byte layout of a zone: header, hash index, page descriptors, data pages.

Everything lives in one buffer (an mmap of a POSIX shared-memory segment, or a plain
``bytearray`` in unit tests).  All links are u32 byte offsets into that buffer (0 = none), so
the structure means the same thing in every process that maps it.

Zone = [header 640 B][hash index: nbuckets x u32][page descriptors: npages x 24 B][pages]

Node (one per key), allocated from a slab chunk::

    hnext u32 | lprev u32 | lnext u32 | hash u32 | expires i64 (monotonic ms, 0 = never)
    | flags u32 | vlen u32 | klen u16 | vtype u8 | cls u8 | key bytes | pad | value bytes

The key is padded so that the value starts 8-byte aligned (numbers are then read and written
with one aligned 8-byte access, which a SIGKILL cannot tear): 36 bytes of header, 0..7 of
padding, plus slab rounding (nginx: 68 plus rounding).
A list value is a 12-byte head (first u32, last u32, length u32); each element is its own
chunk: next u32 | prev u32 | vlen u32 | vtype u8 | bytes.
"""

from __future__ import annotations

import struct

MAGIC = b"EWSHMv1\x00"
VERSION = 1
PAGE = 4096
PAGE_SHIFT = 12
MIN_SIZE = 16384
MAX_SIZE = 2**32 - PAGE

# header offsets
H_MAGIC = 0
H_VERSION = 8
H_PAGE = 12
H_TOTAL = 16
H_NBUCKETS = 24
H_NPAGES = 28
H_INDEX = 32
H_PD = 36
H_DATA = 40
H_OWNER = 48  # owner pid u32 (written right after acquiring, cleared before releasing)
H_DIRTY = 56  # offset of the node being rewritten in place, 0 = none
H_WANT = 60  # set by a process sleeping for the lock: long scans pause for it
H_ENTRIES = 64
H_EVICTIONS = 72
H_HITS = 80
H_MISSES = 88
H_USED = 96
H_LRU = 104  # head u32, tail u32 (head = most recently used)
H_FREERUN = 112  # first free page run (page index + 1), free page count
H_CLS_FREE = 128
HDR_SIZE = 640

# slab size classes (chunk sizes); bigger allocations take whole contiguous pages
CLASSES = tuple(
    list(range(16, 129, 16)) + list(range(160, 1025, 32)) + list(range(1072, 2033, 48)) + [2048]
)
NCLS = len(CLASSES)
H_CLS_CARVE = H_CLS_FREE + 4 * NCLS
MAX_SMALL = CLASSES[-1]
LARGE = 255
# SIZE2CLS[(size + 15) >> 4] -> class index, for 1 <= size <= MAX_SMALL
SIZE2CLS = [0] * ((MAX_SMALL >> 4) + 1)
for _i in range(len(SIZE2CLS)):
    SIZE2CLS[_i] = next(c for c, s in enumerate(CLASSES) if s >= max(_i << 4, 1))
PER_PAGE = tuple(PAGE // s for s in CLASSES)
assert H_CLS_CARVE + 4 * NCLS <= HDR_SIZE

# page descriptor kinds
PG_FREE = 0
PG_SLAB = 1
PG_LARGE = 2
PG_CONT = 3
PD_SIZE = 24

# value types
T_FALSE = 1  # bools are stored as T_BOOL with one byte
T_BOOL = 1
T_INT = 2
T_FLOAT = 3
T_STR = 4
T_BYTES = 5
T_LIST = 6

U16 = struct.Struct("<H")
U16x2 = struct.Struct("<HH")
U32 = struct.Struct("<I")
U32x2 = struct.Struct("<II")
U64 = struct.Struct("<Q")
I64 = struct.Struct("<q")
F64 = struct.Struct("<d")
HDR_FIXED = struct.Struct("<8sIIQIIIII")  # magic .. data_off
NODE = struct.Struct("<IIIIqIIHBB")
NODE_SIZE = NODE.size  # 36
NODE_VAL = struct.Struct("<qIIHB")  # expires, flags, vlen, klen(unused on write), vtype at +16
NODE_META = struct.Struct("<qII")  # expires, flags, vlen at +16
NODE_TAIL = struct.Struct("<qIIHBB")  # expires .. cls at +16
NODE_MATCH = struct.Struct("<I8xI16xH")  # hash-next, hash, klen: what a chain walk compares
NODE_STATE = struct.Struct("<4xI8xqIIHBB")  # lru-prev, expires, flags, vlen, klen, vtype, cls
# node field offsets (the same as NODE's fields)
N_HNEXT = 0
N_LPREV = 4
N_LNEXT = 8
N_HASH = 12
N_EXPIRES = 16
N_FLAGS = 24
N_VLEN = 28
N_KLEN = 32
N_VTYPE = 34
N_CLS = 35
N_KEY = 36
PD = struct.Struct("<BBHHHIIII")  # kind, cls, used, carved, pad, run, prev, next, start
LHEAD = struct.Struct("<III")  # first, last, length
ELEM = struct.Struct("<IIIB")  # next, prev, vlen, vtype
ELEM_SIZE = ELEM.size  # 13
STATS = struct.Struct("<QQQQQ")  # entries, evictions, hits, misses, used
assert NODE_SIZE == N_KEY == 36 and PD.size == PD_SIZE
u32_unpack = U32.unpack_from
u32_pack = U32.pack_into
i64_unpack = I64.unpack_from
i64_pack = I64.pack_into
node_unpack = NODE.unpack_from
pd_unpack = PD.unpack_from
pd_pack = PD.pack_into


def aligned_view(buf) -> memoryview:
    """A byte view of ``buf`` cut to a whole number of 8-byte words, for the u16/u32/i64/f64
    casts through which the zone's words are read and written."""
    return memoryview(buf)[: len(buf) & ~7].cast("B")


# value_offset(klen) == (klen + VALUE_PAD) & ~7 (the hit paths of get, set and incr inline it)
VALUE_PAD = N_KEY + 7


def value_offset(klen: int) -> int:
    """Offset of a node's value from the node's start: the header, the key of ``klen`` bytes,
    then padding to the next multiple of 8 (numbers are aligned 8-byte words)."""
    return (klen + VALUE_PAD) & ~7


def node_size(klen: int, vlen: int) -> int:
    """Bytes a node needs for a key of ``klen`` and a value of ``vlen`` bytes."""
    return value_offset(klen) + vlen


class Geometry:
    """Offsets and counts of one zone, computed from its size or read from its header."""

    __slots__ = ("total", "nbuckets", "npages", "index_off", "pd_off", "data_off", "mask")

    def __init__(
        self, total: int, nbuckets: int, npages: int, index_off: int, pd_off: int, data_off: int
    ) -> None:
        self.total = total
        self.nbuckets = nbuckets
        self.npages = npages
        self.index_off = index_off
        self.pd_off = pd_off
        self.data_off = data_off
        self.mask = nbuckets - 1

    @classmethod
    def for_size(cls, total: int) -> Geometry:
        """Plan a zone of ``total`` bytes; ``ValueError`` if it is too small or too big."""
        if total < MIN_SIZE:
            raise ValueError(f"zone size {total} too small (minimum {MIN_SIZE} bytes)")
        if total > MAX_SIZE:
            raise ValueError(f"zone size {total} too big (maximum {MAX_SIZE} bytes)")
        nb = 64
        while nb * 128 < total:
            nb <<= 1
        index_off = HDR_SIZE
        pd_off = index_off + 4 * nb
        npages = (total - pd_off - 64) // (PAGE + PD_SIZE)
        data_off = (pd_off + npages * PD_SIZE + 63) & ~63
        while data_off + npages * PAGE > total:
            npages -= 1
        if npages < 2:
            raise ValueError(f"zone size {total} too small")
        return cls(total, nb, npages, index_off, pd_off, data_off)

    @classmethod
    def read(cls, buf) -> Geometry:
        """Read the geometry of a formatted zone; ``ValueError`` if ``buf`` is not one."""
        if len(buf) < HDR_SIZE:
            raise ValueError("not an shm zone (too small)")
        magic, ver, page, total, nb, npages, index_off, pd_off, data_off = HDR_FIXED.unpack_from(
            buf, 0
        )
        if magic != MAGIC or ver != VERSION or page != PAGE:
            raise ValueError("not an shm zone (bad magic or version)")
        g = cls(total, nb, npages, index_off, pd_off, data_off)
        if (
            nb & (nb - 1)
            or index_off != HDR_SIZE
            or pd_off != index_off + 4 * nb
            or data_off + npages * PAGE > len(buf)
            or total > len(buf)
        ):
            raise ValueError("not an shm zone (inconsistent geometry)")
        return g

    def write(self, buf) -> None:
        """Write the fixed header fields."""
        HDR_FIXED.pack_into(
            buf,
            0,
            MAGIC,
            VERSION,
            PAGE,
            self.total,
            self.nbuckets,
            self.npages,
            self.index_off,
            self.pd_off,
            self.data_off,
        )
