"""A lock in a shared dict, across workers and greenlets (``resty.lock``), with owner checks.

::

    from edgeworker.lib.lock import Lock, LockTimeout

    lock = Lock("locks", exptime=10, timeout=2)     # a [shared_dict] name or a SharedDict
    with lock.hold("refresh:users"):                # waits up to 2 s, else LockTimeout
        ...                                         # one worker/greenlet at a time

``lock(key)`` takes the lock with ``add(key, token, exptime)``: the key is written only if
absent, atomically across processes. While someone else holds it, the caller sleeps
cooperatively, first ``step`` seconds, then ``step·ratio``… at most ``max_step``, until
``timeout`` (0 = try once). The lock expires by itself after ``exptime`` seconds, so a crashed
holder never blocks others forever.

Unlike ``resty.lock``, each acquisition stores a unique token and :meth:`Lock.unlock` /
:meth:`Lock.expire` act only while that token is still there: a holder whose lock expired and was
taken by someone else cannot release the new holder's lock (it gets ``False``). (The check and
the delete are two shared-dict operations; the window between them is microseconds, versus an
unconditional delete in resty.)

A ``Lock`` object holds one lock at a time: use one object per greenlet/task (they are cheap).
Keys are used as given: prefix them if the dict holds other data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import runtime
from ..errors import LockError, LockTimeout

__all__ = ["Lock", "LockError", "LockTimeout"]


class Lock:
    """A shared-dict lock; see the module docstring for the options."""

    def __init__(self, shm: Any, *, exptime: float = 30.0, timeout: float = 5.0,
                 step: float = 0.001, ratio: float = 2.0, max_step: float = 0.5) -> None:
        if exptime <= 0 or timeout < 0 or step <= 0 or ratio < 1 or max_step <= 0:
            raise ValueError("exptime, step and max_step must be > 0, timeout >= 0, ratio >= 1")
        if timeout > exptime:
            raise ValueError("timeout must not exceed exptime")
        self._shm_spec = shm
        self._dict: Any = None if isinstance(shm, str) else shm
        self.exptime = float(exptime)
        self.timeout = float(timeout)
        self.step = float(step)
        self.ratio = float(ratio)
        self.max_step = float(max_step)
        self.key: Any = None
        self._token: bytes | None = None

    @property
    def dict(self) -> Any:
        if self._dict is None:
            self._dict = runtime.shared[self._shm_spec]
        return self._dict

    def lock(self, key: str | bytes) -> float:
        """Take the lock on ``key``; returns the seconds spent waiting (0.0 when it was free).

        Raises ``LockTimeout`` after ``timeout`` seconds, ``LockError`` if this object already
        holds a lock, ``ValueError`` for an empty key.
        """
        if self._token is not None:
            raise LockError("locked: this Lock object already holds a lock")
        if not key:
            raise ValueError("empty key")
        d = self.dict
        token = os.urandom(12)
        if d.add(key, token, self.exptime):
            self.key, self._token = key, token
            return 0.0
        if self.timeout == 0:
            raise LockTimeout(f"lock {key!r} is taken")
        start = time.monotonic()
        deadline = start + self.timeout
        step = self.step
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise LockTimeout(f"timed out after {self.timeout}s waiting for lock {key!r}")
            time.sleep(min(step, deadline - now))
            if d.add(key, token, self.exptime):
                self.key, self._token = key, token
                return time.monotonic() - start
            step = min(max(0.001, step * self.ratio), self.max_step)

    def unlock(self) -> bool:
        """Release the lock. ``True`` if it was still ours; ``False`` if this object held
        nothing, or the lock had expired (and maybe been taken by someone else, whose lock is
        left alone)."""
        token, key = self._token, self.key
        self._token = self.key = None
        if token is None:
            return False
        d = self.dict
        if d.get(key) != token:
            return False
        d.delete(key)
        return True

    def expire(self, exptime: float | None = None) -> bool:
        """Reset the lock's expiry to ``exptime`` (default: the object's) seconds from now,
        if it is still ours. Returns whether it was."""
        if self._token is None:
            return False
        d = self.dict
        if d.get(self.key) != self._token:
            return False
        return bool(d.expire(self.key, self.exptime if exptime is None else exptime))

    @property
    def locked(self) -> bool:
        """This object holds a lock that is still ours in the dict."""
        return self._token is not None and self.dict.get(self.key) == self._token

    @contextmanager
    def hold(self, key: str | bytes) -> Iterator[float]:
        """``with lock.hold(key) as waited:`` lock, run the block, unlock (even on error)."""
        waited = self.lock(key)
        try:
            yield waited
        finally:
            self.unlock()
