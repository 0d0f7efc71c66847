"""edgeworker.timers: ngx.timer semantics on a real gevent hub.

The pytest process is not monkey-patched: callbacks wait with gevent.sleep. One test runs a real
subprocess that patches first and sleeps with time.sleep inside callbacks.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gevent
import pytest

from edgeworker import timers as timers_mod
from edgeworker.errors import PhaseError, ProcessExiting, TooManyTimers
from edgeworker.timers import KILL_GRACE, Timers, install, installed, timer

ROOT = Path(__file__).resolve().parents[2]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at_level(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno == level]


@pytest.fixture
def log() -> tuple[logging.Logger, ListHandler]:
    logger = logging.getLogger(f"test.timers.{time.monotonic_ns()}")
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, handler


@pytest.fixture
def make(log):
    made: list[Timers] = []

    def factory(max_pending: int = 1024, max_running: int = 256) -> Timers:
        t = Timers(max_pending, max_running, log[0])
        made.append(t)
        return t

    yield factory
    for t in made:  # never leave armed watchers or greenlets behind
        t.shutdown(0.5)
    install(None)


def wait_until(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        gevent.sleep(0.005)
    return pred()


# -- at --------------------------------------------------------------------------------------


def test_at_fires_in_due_order_with_premature_false_and_args(make):
    t = make()
    calls = []

    def rec(premature, *args):
        calls.append((premature, args))

    t.at(0.15, rec, "c")
    t.at(0.05, rec, "a", 1, {"k": "v"})
    t.at(0.10, rec, "b")
    assert t.pending_count() == 3
    assert wait_until(lambda: len(calls) == 3)
    assert calls == [(False, ("a", 1, {"k": "v"})), (False, ("b",)), (False, ("c",))]
    assert t.pending_count() == 0
    assert wait_until(lambda: t.running_count() == 0)


def test_at_does_not_fire_before_its_delay(make):
    t = make()
    fired = []
    t.at(0.5, lambda p: fired.append(p))
    gevent.sleep(0.1)
    assert fired == []
    assert t.pending_count() == 1
    assert wait_until(lambda: fired == [False])


def test_zero_delay_runs_after_the_caller_yields_in_creation_order(make):
    t = make()
    order = []
    for i in range(20):
        t.at(0, lambda p, i: order.append(i), i)
    assert order == []  # nothing runs until we yield
    assert wait_until(lambda: len(order) == 20)
    assert order == list(range(20))


def test_callback_runs_in_its_own_greenlet(make):
    t = make()
    seen = []
    t.at(0, lambda p: seen.append(gevent.getcurrent()))
    assert wait_until(lambda: seen)
    assert seen[0] is not gevent.getcurrent()


def test_argument_validation(make):
    t = make()
    with pytest.raises(ValueError):
        t.at(-0.001, lambda p: None)
    with pytest.raises(ValueError):
        t.at(float("nan"), lambda p: None)
    with pytest.raises(TypeError):
        t.at("1", lambda p: None)
    with pytest.raises(TypeError):
        t.at(True, lambda p: None)
    with pytest.raises(TypeError):
        t.at(1, "not callable")
    with pytest.raises(ValueError):
        t.every(0, lambda p: None)
    with pytest.raises(ValueError):
        t.every(-1, lambda p: None)
    assert t.pending_count() == 0


# -- limits --------------------------------------------------------------------------------


def test_too_many_pending_timers(make):
    t = make(max_pending=3)
    h1 = t.at(10, lambda p: None)
    t.every(10, lambda p: None)
    t.at(10, lambda p: None)
    with pytest.raises(TooManyTimers, match="^too many pending timers$"):
        t.at(10, lambda p: None)
    with pytest.raises(TooManyTimers):
        t.every(10, lambda p: None)
    assert t.pending_count() == 3
    assert h1.cancel() is True
    t.at(10, lambda p: None)  # a freed slot is usable again
    assert t.pending_count() == 3


def test_max_running_queues_due_callbacks_and_drops_none(make):
    t = make(max_running=2)
    state = {"now": 0, "max": 0}
    done = []

    def job(premature, i):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        gevent.sleep(0.15)
        state["now"] -= 1
        done.append(i)

    for i in range(10):
        t.at(0, job, i)
    gevent.sleep(0.005)
    assert t.running_count() == 2
    assert t.pending_count() == 8  # due, waiting for a slot: still pending
    assert wait_until(lambda: len(done) == 10)
    assert sorted(done) == list(range(10))
    assert done[:2] == [0, 1]  # FIFO
    assert state["max"] == 2
    assert wait_until(lambda: t.running_count() == 0 and t.pending_count() == 0)


# -- cancel ----------------------------------------------------------------------------------


def test_cancel(make):
    t = make(max_running=1)
    fired = []
    h = t.at(0.05, lambda p: fired.append("cancelled one"))
    assert h.active
    assert h.cancel() is True
    assert h.cancel() is False
    assert not h.active
    assert t.pending_count() == 0

    done = t.at(0, lambda p: fired.append("ran"))
    assert wait_until(lambda: fired == ["ran"])
    assert done.cancel() is False  # already ran

    # a due callback waiting for a running slot can still be cancelled
    t.at(0, lambda p: gevent.sleep(0.5))
    queued = t.at(0, lambda p: fired.append("queued one"))
    gevent.sleep(0.01)
    assert t.running_count() == 1 and t.pending_count() == 1
    assert queued.cancel() is True
    assert wait_until(lambda: t.running_count() == 0)
    gevent.sleep(0.02)
    assert fired == ["ran"]
    assert t.pending_count() == 0


def test_every_can_cancel_itself_from_its_callback(make):
    t = make()
    runs = []
    holder = {}

    def tick(premature):
        runs.append(premature)
        if len(runs) == 3:
            assert holder["h"].cancel() is True

    holder["h"] = t.every(0.01, tick)
    assert wait_until(lambda: len(runs) >= 3)
    gevent.sleep(0.1)
    assert runs == [False, False, False]
    assert t.pending_count() == 0
    assert not holder["h"].active


# -- every -----------------------------------------------------------------------------------


def test_every_never_overlaps_with_a_slow_callback(make):
    t = make()
    spans = []
    state = {"now": 0, "max": 0}

    def slow(premature):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        start = time.monotonic()
        gevent.sleep(0.06)  # slower than the interval
        spans.append((start, time.monotonic()))
        state["now"] -= 1

    h = t.every(0.02, slow)
    assert wait_until(lambda: len(spans) >= 4)
    h.cancel()
    assert state["max"] == 1
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end  # the next run starts only after the previous one returned
    assert t.pending_count() == 0


def test_every_counts_as_pending_for_its_life(make):
    t = make()
    h = t.every(0.01, lambda p: gevent.sleep(0.05))
    assert t.pending_count() == 1
    assert wait_until(lambda: t.running_count() == 1)
    assert t.pending_count() == 1
    h.cancel()
    assert t.pending_count() == 0


def test_every_keeps_running_after_exceptions(make, log):
    _, handler = log
    t = make()
    runs = []

    def flaky(premature):
        runs.append(premature)
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")

    h = t.every(0.01, flaky)
    assert wait_until(lambda: len(runs) >= 5)
    h.cancel()
    errors = handler.at_level(logging.ERROR)
    assert len(errors) == 2
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in errors)
    assert "flaky" in errors[0].getMessage()


# -- errors ----------------------------------------------------------------------------------


def test_exceptions_are_logged_with_traceback_and_never_escape(make, log, capsys):
    _, handler = log
    t = make()
    after = []

    def boom(premature, what):
        raise ValueError(what)

    def leaves(premature):
        raise SystemExit(3)  # must not end the worker

    t.at(0, boom, "bad value")
    t.at(0, leaves)
    t.at(0.02, lambda p: after.append("still alive"))
    assert wait_until(lambda: after == ["still alive"])
    errors = handler.at_level(logging.ERROR)
    assert len(errors) == 2
    assert isinstance(errors[0].exc_info[1], ValueError)
    assert "boom" in errors[0].getMessage()
    formatted = logging.Formatter().format(errors[0])
    assert "Traceback" in formatted and "bad value" in formatted
    assert isinstance(errors[1].exc_info[1], SystemExit)
    assert "Traceback" not in capsys.readouterr().err  # nothing reached gevent's hub printer
    assert t.running_count() == 0


# -- graceful exit -----------------------------------------------------------------------------


def test_shutdown_fires_every_pending_timer_prematurely(make, log):
    t = make()
    calls = []
    t.at(30, lambda p, tag: calls.append((tag, p)), "at-30")
    t.at(60, lambda p, tag: calls.append((tag, p)), "at-60")
    every = t.every(30, lambda p, tag: calls.append((tag, p)), "every-30")
    cancelled = t.at(30, lambda p, tag: calls.append((tag, p)), "cancelled")
    cancelled.cancel()
    started = time.monotonic()
    t.shutdown(5)
    assert time.monotonic() - started < 2  # did not wait for the delays
    assert calls == [("at-30", True), ("at-60", True), ("every-30", True)]
    assert t.exiting
    assert t.pending_count() == 0 and t.running_count() == 0
    assert not every.active
    gevent.sleep(0.05)
    assert len(calls) == 3  # the every timer fired once and stopped


def test_exiting_rejects_delays_but_allows_zero(make):
    t = make()
    seen = []

    def on_exit(premature):
        seen.append(("premature", premature))
        try:
            t.at(1, lambda p: seen.append("never"))
        except ProcessExiting as exc:
            seen.append(("at(1)", str(exc)))
        try:
            t.every(1, lambda p: seen.append("never"))
        except ProcessExiting as exc:
            seen.append(("every(1)", str(exc)))
        t.at(0, lambda p: (gevent.sleep(0.05), seen.append(("at(0)", p))))

    t.at(30, on_exit)
    t.shutdown(5)
    assert seen == [
        ("premature", True),
        ("at(1)", "process exiting"),
        ("every(1)", "process exiting"),
        ("at(0)", False),  # waited for; fired normally, as in OpenResty
    ]
    with pytest.raises(ProcessExiting):
        t.at(0, lambda p: None)  # after shutdown finished nothing could run


def test_every_running_at_shutdown_gets_one_premature_call_afterwards(make):
    t = make()
    calls = []
    state = {"now": 0, "max": 0}

    def job(premature):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        calls.append(premature)
        if not premature:
            gevent.sleep(0.2)
        state["now"] -= 1

    t.every(0.01, job)
    assert wait_until(lambda: t.running_count() == 1)
    t.shutdown(5)
    assert calls[-1] is True and calls.count(True) == 1
    assert state["max"] == 1
    assert t.running_count() == 0 and t.pending_count() == 0


def test_premature_firing_respects_max_running_and_runs_all(make):
    t = make(max_running=2)
    ran = []
    for i in range(6):
        t.at(30, lambda p, i: (gevent.sleep(0.02), ran.append((i, p))), i)
    t.shutdown(5)
    assert sorted(ran) == [(i, True) for i in range(6)]


def test_shutdown_timeout_is_bounded_and_kills_callbacks(make, log):
    _, handler = log
    t = make()
    state = {"killed": False}

    def forever(premature):
        try:
            gevent.sleep(60)
        except gevent.GreenletExit:
            state["killed"] = True
            raise

    t.at(0, forever)
    t.at(30, forever)  # fires prematurely, then sleeps too
    assert wait_until(lambda: t.running_count() == 1)
    started = time.monotonic()
    t.shutdown(0.3)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 0.3 + KILL_GRACE + 1.0
    assert state["killed"]
    assert t.running_count() == 0 and t.pending_count() == 0
    assert any("graceful timeout" in r.getMessage() for r in handler.at_level(logging.WARNING))


def test_shutdown_returns_even_if_a_callback_ignores_being_killed(make, log):
    _, handler = log
    t = make()
    state = {"done": False}

    def stubborn(premature):
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # bounded, but far past the shutdown deadline
            try:
                gevent.sleep(0.05)
            except gevent.GreenletExit:
                pass
        state["done"] = True

    t.at(0, stubborn)
    assert wait_until(lambda: t.running_count() == 1)
    started = time.monotonic()
    t.shutdown(0.2)
    assert time.monotonic() - started < 0.2 + KILL_GRACE + 1.0
    assert any("ignored GreenletExit" in r.getMessage() for r in handler.at_level(logging.ERROR))
    assert wait_until(lambda: state["done"], timeout=5)  # let it end before the next test


def test_shutdown_with_nothing_pending_returns_at_once(make):
    t = make()
    started = time.monotonic()
    t.shutdown(10)
    assert time.monotonic() - started < 0.5
    t.shutdown(10)  # idempotent


# -- module facade (edgeworker.timer) ----------------------------------------------------------


def test_facade_raises_phase_error_when_no_timers_installed():
    install(None)
    with pytest.raises(PhaseError, match=r"^timer\.at is not allowed in the master \(init\)$"):
        timer.at(1, lambda p: None)
    with pytest.raises(PhaseError, match=r"^timer\.every is not allowed in the master"):
        timer.every(1, lambda p: None)
    assert timer.pending_count() == 0 and timer.running_count() == 0


def test_facade_forwards_to_the_installed_timers(make):
    t = make()
    install(t)
    assert installed() is t
    fired = []
    h = timer.at(0, lambda p, x: fired.append(x), "via facade")
    timer.every(10, lambda p: None)
    assert timer.pending_count() == 2 == t.pending_count()
    assert wait_until(lambda: fired == ["via facade"])
    assert h.cancel() is False
    assert timer.pending_count() == 1
    install(None)
    assert installed() is None


def test_timers_are_not_usable_in_a_forked_child(make):
    t = make()
    install(t)
    pid = os.fork()
    if pid == 0:  # child: exit code reports what happened
        code = 0
        try:
            if installed() is not None:
                code |= 1
            try:
                timer.at(1, lambda p: None)
                code |= 2
            except PhaseError:
                pass
            try:
                t.at(1, lambda p: None)
                code |= 4
            except PhaseError:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert installed() is t


# -- a real monkey-patched process ---------------------------------------------------------------

PATCHED_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import json, logging, sys, time
    from edgeworker.timers import Timers, install, timer

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    t = Timers(16, 4, logging.getLogger("worker"))
    install(t)
    events = []

    def slow(premature, name):
        events.append(name + " start")
        time.sleep(0.2)  # patched: yields to the hub
        events.append(name + " end")

    def quick(premature, name):
        events.append(name)

    ticks = []
    timer.at(0, slow, "A")
    timer.at(0.05, quick, "B")  # must run while A sleeps
    h = timer.every(0.02, lambda premature: (time.sleep(0.01), ticks.append(premature)))
    timer.at(60, quick, "late")
    time.sleep(0.4)
    h.cancel()
    t.shutdown(5)
    print(json.dumps({"events": events, "ticks": len(ticks),
                      "pending": t.pending_count(), "running": t.running_count()}))
    """
)


def test_monkey_patched_worker_with_time_sleep_in_callbacks(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(PATCHED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["events"] == ["A start", "B", "A end", "late"]
    assert result["ticks"] >= 3
    assert result["pending"] == 0 and result["running"] == 0
    assert "Traceback" not in proc.stderr


def test_module_exports():
    assert set(timers_mod.__all__) >= {"Timers", "TimerHandle", "timer", "install", "installed"}
