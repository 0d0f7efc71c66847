"""The systemd notify protocol (sd_notify(3)) and socket activation (sd_listen_fds(3)).

Pure standard library, no libsystemd. Every call is a no-op returning False/[] when the process
does not run under systemd, so the master may call them unconditionally:

* ``ready()`` once every worker accepts (not before: that is gunicorn's mistake);
* ``reloading()`` when a reload starts (``RELOADING=1`` with ``MONOTONIC_USEC``, which
  ``Type=notify-reload`` needs), then ``ready()`` when it is over, whether it worked or not;
* ``stopping()`` when a stop begins;
* ``status(text)`` for a one-line state that ``systemctl status`` shows.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = [
    "SD_LISTEN_FDS_START",
    "listen_fds",
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
]

#: the first inherited socket-activation fd
SD_LISTEN_FDS_START = 3

#: a send never blocks the master longer than this (the manager's queue could be full)
SEND_TIMEOUT = 1.0


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:…": not supported, treated as unset


def notify(*lines: str) -> bool:
    """Send ``lines`` (``"KEY=VALUE"`` each) as one datagram to ``$NOTIFY_SOCKET``.

    Returns True if the datagram was sent; False, silently, when ``NOTIFY_SOCKET`` is unset or
    not a path / ``@abstract`` name, or the send failed (as sd_notify ignores errors). Raises
    ``ValueError`` for a line that is empty, has no ``=`` or contains a newline (that would forge
    another field), ``TypeError`` for a non-``str`` line.
    """
    for line in lines:
        if not isinstance(line, str):
            raise TypeError(f"notify lines must be str, not {type(line).__name__}")
        if "\n" in line or "=" not in line:
            raise ValueError(f"invalid notify line {line!r}: want KEY=VALUE without newlines")
    address = _address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None or not lines:
        return False
    data = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except OSError:
        return False
    try:
        sock.settimeout(SEND_TIMEOUT)
        sock.connect(address)
        return sock.send(data) == len(data)
    except OSError:
        return False
    finally:
        sock.close()


def _with_status(lines: list[str], text: str | None) -> list[str]:
    if text is not None:
        lines.append("STATUS=" + _one_line(text))
    return lines


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def ready(status: str | None = None) -> bool:
    """``READY=1`` (start-up or a reload finished), with an optional ``STATUS=`` line."""
    return notify(*_with_status(["READY=1"], status))


def reloading(status: str | None = None) -> bool:
    """``RELOADING=1`` plus ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC in µs) as notify-reload needs.

    Send :func:`ready` once the reload is over, successful or not, or systemd waits for it.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(*_with_status(["RELOADING=1", f"MONOTONIC_USEC={usec}"], status))


def stopping(status: str | None = None) -> bool:
    """``STOPPING=1``: a stop began."""
    return notify(*_with_status(["STOPPING=1"], status))


def status(text: str) -> bool:
    """``STATUS=text`` (newlines folded to spaces)."""
    return notify("STATUS=" + _one_line(text))


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The sockets passed by socket activation, as ``socket.socket`` objects (fds 3, 4, …).

    Honours ``LISTEN_PID`` (must be this process) and ``LISTEN_FDS`` (count), like
    sd_listen_fds(3): returns ``[]`` when they are absent, invalid or meant for another process.
    Marks the fds close-on-exec. Unless ``unset_environment`` is False, removes ``LISTEN_PID``,
    ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` from the environment in every case, so children (the
    workers, a re-exec) do not take them for their own. An inherited fd that is not a socket is
    left alone and skipped.
    """
    try:
        pid = os.environ.get("LISTEN_PID", "")
        count = os.environ.get("LISTEN_FDS", "")
        if not (pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
            return []
        sockets = []
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
            try:
                os.set_inheritable(fd, False)
                sockets.append(socket.socket(fileno=fd))
            except OSError:
                continue  # closed, or not a socket
        return sockets
    finally:
        if unset_environment:
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)
