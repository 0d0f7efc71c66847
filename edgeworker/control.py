"""The master's state file: how ``edgeworker reload|stop|reopen|shm`` find the running master and
learn the outcome of what they asked for.

The master keeps a small JSON document beside its pid file (``/run/edgeworker.pid`` →
``/run/edgeworker.pid.json``), replaced atomically (written to a temporary file in the same
folder, then renamed) whenever it changes::

    {"pid": 1234, "version": "0.1.0", "config": "/etc/edgeworker/edgeworker.toml",
     "pid_file": "/run/edgeworker.pid", "generation": 4, "workers": 2,
     "graceful_timeout": 30.0, "shared_dicts": ["counters"],
     "reload": {"seq": 4, "started": 5123.4, "ok": true,
                "message": "reloaded: generation 4, 2 workers"},
     "reopen": {"seq": 0, "started": 0.0, "ok": true, "message": ""}}

``seq`` counts the outcomes of that action; ``started`` is when the master began it, on
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process of the host). A command sends
its signal at time ``t`` and waits for an outcome with a higher ``seq`` that started at or after
``t``, so it never reports the outcome of an earlier request. The master writes the file once its
signal handlers are installed (a HUP or USR1 before that would kill it) and removes it when it
exits.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

__all__ = [
    "ACTIONS",
    "STATE_SUFFIX",
    "await_outcome",
    "process_alive",
    "read_state",
    "remove_state",
    "state_path",
    "write_state",
]

STATE_SUFFIX = ".json"

#: the actions whose outcome the master reports
ACTIONS = ("reload", "reopen")


def state_path(pid_file: str) -> str:
    """The state file that belongs to ``pid_file``."""
    return pid_file + STATE_SUFFIX


def write_state(path: str, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` (JSON) atomically, mode 0644. ``OSError`` if it cannot."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".edgeworker-state-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_state(path: str) -> dict[str, Any] | None:
    """The document at ``path``; None when there is none. ``ValueError`` naming the file when it
    holds no JSON object; ``OSError`` when it cannot be read."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"state file {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"state file {path} holds no JSON object")
    return doc


def await_outcome(
    pid: int, pid_file: str, action: str, before: int, sent: float, timeout: float
) -> tuple[bool, str]:
    """Wait for master ``pid``'s outcome of ``action`` (``"reload"``, ``"reopen"``): the first
    one in its state file with a ``seq`` above ``before`` that began at or after ``sent`` (the
    monotonic time its signal was sent). ``(ok, message)``; ``(False, why)`` when the master
    exits first or nothing comes within ``timeout`` seconds of ``sent``."""
    path = state_path(pid_file)
    deadline = sent + timeout
    while True:
        try:
            state = read_state(path)
        except (OSError, ValueError):
            state = None
        if state is not None and state.get("pid") == pid:
            out = state[action]
            if out["seq"] > before and out["started"] >= sent:
                return bool(out["ok"]), out["message"]
        if not process_alive(pid):
            return False, f"master {pid} exited before reporting the {action} (see its error log)"
        if time.monotonic() >= deadline:
            return False, (
                f"no {action} outcome from master {pid} within {timeout:g} s "
                "(see its error log; --timeout waits longer)"
            )
        time.sleep(0.05)


def remove_state(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie waiting for its parent to
    reap it counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # gone since kill(0), unless /proc is missing
    except OSError:
        return True  # kill(0) said it exists
    # "pid (comm) S ...": the state follows the last ")", as comm may hold spaces or ")"
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])
