"""Naming, creation and mapping of the POSIX shared memory segment and semaphore of a zone.

A zone called ``NAME`` is the shared memory object ``/edgeworker.NAME`` (on Linux the file
``/dev/shm/edgeworker.NAME``) and the named semaphore ``/edgeworker.NAME.lock``
(``/dev/shm/sem.edgeworker.NAME.lock``).  Both outlive processes until ``unlink``.

The semaphore is opened through ``shm._accel.Semaphore`` (the C part, which the install builds:
a lock round trip about ten times cheaper), or through ``posix_ipc.Semaphore`` when
``SHM_NO_ACCEL=1`` in the environment turns the C part off; both raise posix_ipc's exceptions.
Without ``SHM_NO_ACCEL``, a missing C part is an ``ImportError`` that says how to build it.
"""

from __future__ import annotations

import mmap
import os

import posix_ipc

PREFIX = "/edgeworker."


def _load_accel():
    if os.environ.get("SHM_NO_ACCEL"):
        return None
    try:
        from . import _accel
    except ImportError as exc:
        raise ImportError(
            "shm's C part (shm/_accel.c) is not built: install edgeworker again with a C "
            "compiler and the Python headers (Debian: gcc python3-dev); SHM_NO_ACCEL=1 runs "
            "its pure-Python twins instead"
        ) from exc
    return _accel


#: the C part (``shm/_accel.c``), or None
accel = _load_accel()
Semaphore = accel.Semaphore if accel is not None else posix_ipc.Semaphore


def check_name(name: str) -> str:
    """Validate a zone name: 1..200 chars, no ``/`` or NUL. Returns it; ``ValueError`` else."""
    if not isinstance(name, str):
        raise TypeError("zone name must be a str")
    if not name or len(name) > 200 or "/" in name or "\x00" in name:
        raise ValueError(f"invalid zone name {name!r}")
    return name


def shm_name(name: str) -> str:
    """POSIX name of the zone's shared memory object."""
    return PREFIX + check_name(name)


def sem_name(name: str) -> str:
    """POSIX name of the zone's semaphore."""
    return PREFIX + check_name(name) + ".lock"


class Segment:
    """A mapped zone: the mmap, the segment's fd (kept open for take-over locks), the semaphore."""

    def __init__(self, name: str, mem: mmap.mmap, fd: int, sem: Semaphore) -> None:
        self.name = name
        self.mem = mem
        self.fd = fd
        self.sem = sem

    @classmethod
    def create(cls, name: str, size: int, mode: int = 0o600) -> Segment:
        """Create a new segment of ``size`` bytes and its semaphore (value 1).

        ``FileExistsError`` if a segment with that name exists.  A leftover semaphore without a
        segment (from a crash during ``unlink``) is replaced.
        """
        try:
            shm = posix_ipc.SharedMemory(shm_name(name), posix_ipc.O_CREX, mode, size)
        except posix_ipc.ExistentialError:
            raise FileExistsError(f"shared dict {name!r} exists") from None
        try:
            try:
                sem = Semaphore(sem_name(name), posix_ipc.O_CREX, mode, 1)
            except posix_ipc.ExistentialError:
                posix_ipc.unlink_semaphore(sem_name(name))
                sem = Semaphore(sem_name(name), posix_ipc.O_CREX, mode, 1)
            mem = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            posix_ipc.unlink_shared_memory(shm_name(name))
            raise
        return cls(name, mem, shm.fd, sem)

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map an existing segment; ``FileNotFoundError`` if there is none."""
        try:
            shm = posix_ipc.SharedMemory(shm_name(name))
        except posix_ipc.ExistentialError:
            raise FileNotFoundError(f"shared dict {name!r} not found") from None
        try:
            sem = Semaphore(sem_name(name))
        except posix_ipc.ExistentialError:
            shm.close_fd()
            raise FileNotFoundError(f"shared dict {name!r} has no semaphore") from None
        try:
            mem = mmap.mmap(shm.fd, shm.size)
        except BaseException:
            shm.close_fd()
            sem.close()
            raise
        return cls(name, mem, shm.fd, sem)

    def close(self) -> None:
        """Unmap and close this process's handles (the zone itself stays)."""
        try:
            self.mem.close()
        except BufferError:
            pass  # exported memoryviews still alive; the mapping goes with them
        os.close(self.fd)
        self.sem.close()

    @staticmethod
    def unlink(name: str) -> None:
        """Remove the segment and semaphore names; missing ones are ignored."""
        for fn, n in (
            (posix_ipc.unlink_shared_memory, shm_name(name)),
            (posix_ipc.unlink_semaphore, sem_name(name)),
        ):
            try:
                fn(n)
            except posix_ipc.ExistentialError:
                pass

    @staticmethod
    def exists(name: str) -> bool:
        """True if a segment with this name exists."""
        try:
            shm = posix_ipc.SharedMemory(shm_name(name))
        except posix_ipc.ExistentialError:
            return False
        shm.close_fd()
        return True
