"""Real backend processes for the proxy / client tests (started as subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..support import free_port, wait_port

HERE = Path(__file__).resolve().parent


class Backend:
    """``python http_backend.py PORT NAME`` in its own session; ``stop()`` kills it."""

    def __init__(self, name: str = "backend", port: int | None = None,
                 tls: tuple[Path, ...] | None = None) -> None:
        """``tls``: (certificate, key[, client CA]) PEM files: the backend speaks HTTPS (and
        with a client CA requires a client certificate it signed)."""
        self.name = name
        self.port = port or free_port()
        extra = [",".join(str(p) for p in tls)] if tls else []
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "http_backend.py"), str(self.port), name, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_port(self.port, proc=self.proc)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(5)
