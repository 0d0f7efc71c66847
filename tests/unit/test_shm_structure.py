"""Structure-level tests over a plain bytearray (no processes): allocator and verify()."""

from __future__ import annotations

import os
import random
import re
import zlib

import pytest

from shm import NoMemory, SharedDict, layout
from shm.layout import H_CLS_FREE, H_ENTRIES, H_FREERUN, H_LRU, H_USED, U32, U64, U32x2

ACCEL_C = os.path.join(os.path.dirname(layout.__file__), "_accel.c")
# _accel.c's #defines that are not layout (tuning of the C code itself)
C_ONLY = {"SPIN", "MAX_CHAIN"}
# _accel.c's names for layout.py's constants where they differ (structmember.h has a T_INT)
C_NAMES = {"VTYPE_INT": "T_INT"}


def filled(size=2 * 1024 * 1024, n=300, seed=0) -> SharedDict:
    d = SharedDict.from_buffer(bytearray(size))
    rnd = random.Random(seed)
    for i in range(n):
        d.set(f"k{i}", "v" * rnd.randrange(1, 3000))
    for i in range(20):
        d.rpush("list", f"e{i}")
    assert d.verify() == []
    return d


def test_random_workload_keeps_structure_sound():
    d = SharedDict.from_buffer(bytearray(64 * 1024))
    rnd = random.Random(42)
    for i in range(6000):
        k = f"k{rnd.randrange(150)}"
        r = rnd.random()
        try:
            if r < 0.4:
                d.set(k, rnd.choice([1, 2.5, True, "x" * rnd.randrange(9000), b"y" * 90]))
            elif r < 0.5:
                d.delete(k)
            elif r < 0.6:
                d.rpush("L" + k, "e" * rnd.randrange(60))
            elif r < 0.7:
                d.lpop("L" + k)
            elif r < 0.75:
                d.safe_set(k, "z" * rnd.randrange(5000))
            else:
                d.get(k)
        except NoMemory:
            pass
        if i % 300 == 0:
            assert d.verify() == []
    assert d.verify() == []
    d.flush_all()
    assert d.verify() == [] and d.free_space() == d._g.npages * 4096


def test_pages_come_back_after_delete():
    d = SharedDict.from_buffer(bytearray(256 * 1024))
    free0 = d.free_space()
    for i in range(500):
        d.set(f"k{i}", "v" * (i % 700 + 1))
    d.set("big", "b" * 50_000)
    for i in range(500):
        d.delete(f"k{i}")
    d.delete("big")
    assert d.verify() == []
    # at most one kept (empty) page per size class is held back; it is reclaimed on demand
    d.set("huge", "h" * (free0 - 4096))
    assert d.get("huge") == "h" * (free0 - 4096)


@pytest.mark.parametrize(
    "damage",
    [
        "lru_head",
        "lru_loop",
        "entries",
        "used",
        "free_run",
        "class_free",
        "bucket",
        "node_hash",
        "list_len",
        "magic",
    ],
)
def test_verify_detects_damage(damage):
    d = filled()
    buf = d._buf
    off = d._lookup(b"k7", zlib.crc32(b"k7"))
    if damage == "lru_head":
        U32x2.pack_into(buf, H_LRU, off + 8, U32x2.unpack_from(buf, H_LRU)[1])
    elif damage == "lru_loop":
        U32.pack_into(buf, off + 8, off)
    elif damage == "entries":
        U64.pack_into(buf, H_ENTRIES, 5)
    elif damage == "used":
        U64.pack_into(buf, H_USED, U64.unpack_from(buf, H_USED)[0] + 16)
    elif damage == "free_run":
        U32x2.pack_into(buf, H_FREERUN, 0, 3)
    elif damage == "class_free":
        U32.pack_into(buf, H_CLS_FREE, off)
    elif damage == "bucket":
        idx = d._index + 4 * (zlib.crc32(b"k7") & d._mask)
        U32.pack_into(buf, idx, 0)  # the node leaks: in the LRU but not indexed
    elif damage == "node_hash":
        U32.pack_into(buf, off + 12, 12345)
    elif damage == "list_len":
        loff = d._lookup(b"list", zlib.crc32(b"list"))
        U32.pack_into(buf, loff + 36 + 4 + 8, 99)
    elif damage == "magic":
        buf[0:8] = b"garbage!"
    assert d.verify() != []


def accel_defines(text: str) -> dict[str, int]:
    """The ``#define NAME <integer>`` lines of a C source."""
    return {
        m[1]: int(m[2], 0)
        for m in re.finditer(r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)
    }


def test_accel_c_layout_constants_are_layout_py_values():
    """Every integer #define in shm/_accel.c is layout.py's value under the same name (or the
    name in C_NAMES), or a tuning constant of the C code listed in C_ONLY: a layout change
    that is not made in _accel.c too (or a new C constant unknown to layout.py) fails here,
    whether or not the C module is built."""
    with open(ACCEL_C) as f:
        defines = accel_defines(f.read())
    checked = {}
    for name, value in defines.items():
        if name in C_ONLY:
            continue
        py = C_NAMES.get(name, name)
        assert hasattr(layout, py), f"_accel.c defines {name}, which shm/layout.py lacks"
        assert value == getattr(layout, py), (
            f"_accel.c {name}={value}, layout.py {getattr(layout, py)}"
        )
        checked[py] = value
    assert {"NODE_SIZE", "N_KEY", "N_KLEN", "N_HASH", "VALUE_PAD", "H_LRU", "T_INT"} <= set(checked)
    assert layout.value_offset(5) == (5 + checked["VALUE_PAD"]) & ~7


def test_accel_defines_parser_sees_a_mismatch():
    text = "#define N_KEY 40 /* node: the key */\n#define SPIN 200\n"
    defines = accel_defines(text)
    assert defines == {"N_KEY": 40, "SPIN": 200}
    assert defines["N_KEY"] != layout.N_KEY


def test_node_views_agree_with_node():
    """NODE_MATCH, NODE_STATE and the N_* offsets read the fields NODE writes."""
    buf = bytearray(64)
    fields = (0x11111111, 0x22222222, 0x33333333, 0x44444444, -5, 0x66, 0x77, 0x88, 9, 10)
    layout.NODE.pack_into(buf, 0, *fields)
    hnext, lprev, lnext, h, exp, flags, vlen, klen, vt, cls = fields
    assert layout.NODE_MATCH.unpack_from(buf, 0) == (hnext, h, klen)
    assert layout.NODE_STATE.unpack_from(buf, 0) == (lprev, exp, flags, vlen, klen, vt, cls)
    u32 = layout.U32.unpack_from
    assert [u32(buf, o)[0] for o in (layout.N_HNEXT, layout.N_LPREV, layout.N_LNEXT)] == [
        hnext,
        lprev,
        lnext,
    ]
    assert u32(buf, layout.N_HASH)[0] == h and u32(buf, layout.N_FLAGS)[0] == flags
    assert u32(buf, layout.N_VLEN)[0] == vlen
    assert layout.I64.unpack_from(buf, layout.N_EXPIRES)[0] == exp
    assert layout.U16.unpack_from(buf, layout.N_KLEN)[0] == klen
    assert (buf[layout.N_VTYPE], buf[layout.N_CLS]) == (vt, cls)
    assert layout.N_KEY == layout.NODE_SIZE
    for klen in range(1, 40):
        vo = layout.value_offset(klen)
        assert vo % 8 == 0 and layout.N_KEY + klen <= vo < layout.N_KEY + klen + 8
        assert layout.node_size(klen, 3) == vo + 3
