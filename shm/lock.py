"""The zone lock: one POSIX semaphore plus an owner word in the zone header.

A holder writes its pid at ``layout.H_OWNER`` right after taking the semaphore and clears it
just before posting it.  The semaphore is never waited on with a blocking call
(that would freeze every greenlet of a gevent worker): ``acquire(0)`` first, then a short spin,
then short sleeps through ``time.sleep`` (gevent patches it), so other greenlets keep running.

A waiter that cannot get the lock checks the owner every few milliseconds.  If the owner
process is dead (or a zombie), or the semaphore has been taken with no owner written and no
progress for ``STUCK_S`` (a process killed between ``sem_wait`` and writing its pid), the
waiter takes the lock over: it inherits the semaphore, writes its own pid and lets the dict
verify (and if need be reset) the structure.  Take-overs are serialised between processes with
a kernel ``lockf`` record lock on the segment's file descriptor (released by the kernel if the
taker dies too) and inside a process with a ``threading.Lock``.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import posix_ipc

from .layout import H_OWNER, H_WANT, U32

BusyError = posix_ipc.BusyError
SPIN = 2000  # polls of the semaphore value (~0.3 ms) before sleeping
CHECK_S = 0.005  # how often a waiter looks at the owner
STUCK_S = 0.4  # sem taken, no owner written, no progress: holder died before writing its pid
SLEEP_MIN = 0.00002
SLEEP_MAX = 0.0002


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    state = stat[stat.rfind(b")") + 2 :][:1]
    return state not in (b"Z", b"X", b"x")


class NoLock:
    """Lock stand-in for a zone in a private buffer (unit tests, single process)."""

    def acquire(self, timeout: float | None = None) -> None:
        """Do nothing."""

    def release(self) -> None:
        """Do nothing."""

    def wait(self) -> None:
        """Never called: ``acquire`` never fails."""

    def try_takeover(self, owner: int) -> int:
        """Nothing to take over: report that the lock was acquired normally."""
        return 2

    def close(self) -> None:
        """Do nothing."""


class ShmLock:
    """Semaphore-based zone lock with owner pid, dead-owner take-over and no blocking waits.

    ``on_takeover(dead_pid)`` is called with the lock held after a take-over.
    """

    def __init__(
        self,
        sem: Any,  # posix_ipc.Semaphore or shm._accel.Semaphore (see segment.py)
        buf,
        fd: int,
        on_takeover: Callable[[int], None] | None = None,
    ) -> None:
        self.sem = sem
        self.acquire = sem.acquire
        self.release = sem.release
        self.buf = buf
        self.fd = fd
        self.on_takeover = on_takeover
        self._tlock = threading.Lock()

    def wait(self) -> None:
        """Return once the semaphore is held (after ``acquire(0)`` raised ``BusyError``).

        Spins briefly, then sleeps cooperatively; takes over from a dead owner.
        """
        acquire = self.acquire
        sem = self.sem
        for i in range(SPIN):
            if sem.value:  # test before test-and-set: a failed acquire(0) raises (slow)
                try:
                    acquire(0)
                    return
                except BusyError:
                    pass
            if i & 31 == 31:
                os.sched_yield()  # a holder preempted on this CPU gets to run
        buf = self.buf
        seen = U32.unpack_from(buf, H_OWNER)[0]
        now = time.monotonic()
        since = now
        next_check = now + CHECK_S
        delay = SLEEP_MIN
        while True:
            U32.pack_into(buf, H_WANT, 1)  # a hint for long scans to pause between batches
            time.sleep(delay)  # looked up each time: gevent patches time.sleep in workers
            try:
                acquire(0)
                U32.pack_into(buf, H_WANT, 0)
                return
            except BusyError:
                pass
            delay = min(delay * 2, SLEEP_MAX)
            now = time.monotonic()
            if now < next_check:
                continue
            next_check = now + CHECK_S
            owner = U32.unpack_from(buf, H_OWNER)[0]
            if owner != seen:
                seen, since = owner, now
            if owner:
                if pid_alive(owner):
                    continue
            elif now - since < STUCK_S:
                continue
            if self.try_takeover(owner):
                U32.pack_into(buf, H_WANT, 0)
                return

    def try_takeover(self, owner: int) -> int:
        """Take the lock from a dead holder whose owner word is still ``owner``.

        Returns 0 if nothing was done (another process is taking over, or the owner changed),
        1 if this process inherited the lock (``on_takeover`` has run), 2 if the lock turned
        out to be free and was acquired normally.  In cases 1 and 2 the caller holds the lock.
        """
        if not self._tlock.acquire(False):
            return 0
        try:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0
            try:
                try:
                    self.acquire(0)
                    return 2
                except BusyError:
                    pass
                if U32.unpack_from(self.buf, H_OWNER)[0] != owner:
                    return 0
                if owner and pid_alive(owner):
                    return 0
                U32.pack_into(self.buf, H_OWNER, os.getpid())
                if self.on_takeover is not None:
                    self.on_takeover(owner)
                return 1
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)
        finally:
            self._tlock.release()

    def close(self) -> None:
        """Close this process's handle on the semaphore."""
        self.sem.close()
