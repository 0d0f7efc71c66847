"""Property test: random operation sequences against a pure-Python model with TTLs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import shm.dict as shm_dict
from shm import IsAList, NotAList, NotANumber, NotFound, SharedDict

from ..shm_helpers import FakeClock

KEYS = st.sampled_from(["a", "b", "c", "é", "long" * 20])
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=300),
)
EXPTIME = st.sampled_from([0, 0, 0.001, 0.5, 1, 2.5])
FLAGS = st.sampled_from([0, 1, 2**32 - 1])


class Model:
    def __init__(self) -> None:
        self.d: dict[str, list] = {}  # key -> [value, flags, expires_ms]; lists are list values

    def live(self, k, now):
        e = self.d.get(k)
        if e is None or (e[2] and e[2] <= now):
            return None
        return e


class ShdictMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self._orig = shm_dict._now_ns
        shm_dict._now_ns = self.clock
        self.sd = SharedDict.from_buffer(bytearray(1 << 20))
        self.m = Model()

    def teardown(self) -> None:
        shm_dict._now_ns = self._orig

    @property
    def now(self) -> int:
        return self.clock.ns // 1_000_000

    def exp(self, t: float) -> int:
        if not t:
            return 0
        return self.now + max(1, int(t * 1000))

    @rule(k=KEYS, v=SCALARS, t=EXPTIME, f=FLAGS)
    def set(self, k, v, t, f):
        assert self.sd.set(k, v, t, f) is False
        self.m.d[k] = [v, f, self.exp(t)]

    @rule(k=KEYS, v=SCALARS, t=EXPTIME, f=FLAGS)
    def add(self, k, v, t, f):
        exists = self.m.live(k, self.now) is not None
        assert self.sd.add(k, v, t, f) is (not exists)
        if not exists:
            self.m.d[k] = [v, f, self.exp(t)]

    @rule(k=KEYS, v=SCALARS, t=EXPTIME, f=FLAGS)
    def replace(self, k, v, t, f):
        exists = self.m.live(k, self.now) is not None
        assert self.sd.replace(k, v, t, f) is exists
        if exists:
            self.m.d[k] = [v, f, self.exp(t)]

    @rule(k=KEYS)
    def delete(self, k):
        self.sd.delete(k)
        self.m.d.pop(k, None)

    @rule(k=KEYS)
    def get(self, k):
        e = self.m.live(k, self.now)
        if e is not None and isinstance(e[0], list):
            with pytest.raises(IsAList):
                self.sd.get(k)
            return
        got = self.sd.get_with_flags(k)
        want = (None, 0) if e is None else (e[0], e[1])
        assert got == want and type(got[0]) is type(want[0])

    @rule(
        k=KEYS,
        delta=st.one_of(st.integers(-(2**62), 2**62), st.floats(-1e6, 1e6)),
        init=st.one_of(st.none(), st.integers(-100, 100)),
        t=EXPTIME,
    )
    def incr(self, k, delta, init, t):
        e = self.m.live(k, self.now)
        ttl = t if init is not None else 0
        if e is None:
            if init is None:
                with pytest.raises(NotFound):
                    self.sd.incr(k, delta)
                return
            want = init + delta
            assert self.sd.incr(k, delta, init, ttl) == want
            self.m.d[k] = [want, 0, self.exp(ttl)]
            return
        v = e[0]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            with pytest.raises(NotANumber):
                self.sd.incr(k, delta, init, ttl)
            return
        want = v + delta
        if isinstance(want, int) and not -(2**63) <= want < 2**63:
            with pytest.raises(OverflowError):
                self.sd.incr(k, delta, init, ttl)
            return
        got = self.sd.incr(k, delta, init, ttl)
        assert got == want and type(got) is type(want)
        e[0] = want

    @rule(k=KEYS)
    def ttl(self, k):
        e = self.m.live(k, self.now)
        if e is None:
            with pytest.raises(NotFound):
                self.sd.ttl(k)
        else:
            want = 0 if not e[2] else (e[2] - self.now) / 1000
            assert self.sd.ttl(k) == pytest.approx(want)

    @rule(k=KEYS, t=EXPTIME)
    def expire(self, k, t):
        e = self.m.live(k, self.now)
        assert self.sd.expire(k, t) is (e is not None)
        if e is not None:
            e[2] = self.exp(t)

    @rule(
        k=KEYS,
        v=st.one_of(st.integers(), st.text(max_size=20)).filter(
            lambda x: not isinstance(x, int) or -(2**63) <= x < 2**63
        ),
        left=st.booleans(),
    )
    def push(self, k, v, left):
        e = self.m.live(k, self.now)
        fn = self.sd.lpush if left else self.sd.rpush
        if e is not None and not isinstance(e[0], list):
            with pytest.raises(NotAList):
                fn(k, v)
            return
        if e is None:
            e = self.m.d[k] = [[], 0, 0]
        if left:
            e[0].insert(0, v)
        else:
            e[0].append(v)
        assert fn(k, v) == len(e[0])

    @rule(k=KEYS, left=st.booleans())
    def pop(self, k, left):
        e = self.m.live(k, self.now)
        fn = self.sd.lpop if left else self.sd.rpop
        if e is None:
            assert fn(k) is None
            return
        if not isinstance(e[0], list):
            with pytest.raises(NotAList):
                fn(k)
            return
        want = e[0].pop(0 if left else -1)
        assert fn(k) == want
        if not e[0]:
            del self.m.d[k]

    @rule(k=KEYS)
    def llen(self, k):
        e = self.m.live(k, self.now)
        if e is not None and not isinstance(e[0], list):
            with pytest.raises(NotAList):
                self.sd.llen(k)
        else:
            assert self.sd.llen(k) == (0 if e is None else len(e[0]))

    @rule(seconds=st.sampled_from([0.0005, 0.3, 1, 3]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def flush_expired(self):
        now = self.now
        expired = [k for k, e in self.m.d.items() if e[2] and e[2] <= now]
        # entries expired but already reclaimed (overwritten, swept) are no longer counted
        assert self.sd.flush_expired() <= len(expired)
        for k in expired:
            del self.m.d[k]

    @rule()
    def flush_all(self):
        self.sd.flush_all()
        self.m.d.clear()

    @rule()
    def get_keys(self):
        want = {k for k in self.m.d if self.m.live(k, self.now) is not None}
        assert set(self.sd.get_keys(0)) == want

    @invariant()
    def sound(self):
        assert self.sd.verify() == []


ShdictMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_shdict_against_model = ShdictMachine.TestCase
