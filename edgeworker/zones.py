"""The ``[shared_dict]`` zones: one ``shm.SharedDict`` per entry, created by the master.

Zones are named per server instance — the POSIX name of zone ``counters`` of the server whose
master has pid 1234 is ``/edgeworker.1234.counters`` — so two edgeworker servers on one
machine never share a zone by accident. ``edgeworker shm`` attaches to them through the pid file;
``python -m shm stats 1234.counters`` works too.
"""

from __future__ import annotations

from typing import Any

from . import runtime


def zone_name(name: str, master_pid: int) -> str:
    """The shm zone name of ``[shared_dict] name`` for the server of ``master_pid``."""
    return f"{master_pid}.{name}"


def attach_zone(name: str, master_pid: int) -> Any:
    """Attach to zone ``name`` of the server whose master is ``master_pid``
    (``FileNotFoundError`` if absent)."""
    from shm import SharedDict

    return SharedDict.attach(zone_name(name, master_pid))


class Zones:
    """The master's zones and their configured sizes."""

    def __init__(self, master_pid: int) -> None:
        self.master_pid = master_pid
        self.dicts: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}

    def open(self, shared_dict: dict[str, int]) -> tuple[dict[str, Any], dict[str, int]]:
        """The zones for a new config: a zone with the same name and size is kept with its data
        (reload); a resized or new one is created empty (a resize is logged). Nothing is freed
        here: call ``commit`` once the new generation serves, or ``abort`` to undo."""
        dicts: dict[str, Any] = {}
        if shared_dict:
            from shm import SharedDict

            for name, size in shared_dict.items():
                old = self.dicts.get(name)
                if old is not None and self.sizes[name] == size:
                    dicts[name] = old
                    continue
                full = zone_name(name, self.master_pid)
                if old is not None:
                    runtime.log.warning("shared dict %r resized to %d bytes: it starts empty", name, size)
                    old.unlink()  # its workers keep the mapping until they exit
                else:
                    SharedDict.remove(full)  # a leftover of a crashed server with this pid
                dicts[name] = SharedDict.create(full, size)
        return dicts, dict(shared_dict)

    def commit(self, dicts: dict[str, Any], sizes: dict[str, int]) -> None:
        """Make ``dicts`` current; free the zones no longer used."""
        for name, zone in self.dicts.items():
            if dicts.get(name) is not zone:
                free_zone(zone)
                runtime.log.info("shared dict %r freed", name)
        self.dicts, self.sizes = dicts, sizes

    def abort(self, dicts: dict[str, Any]) -> None:
        """Undo ``open``: free the zones it created."""
        for name, zone in dicts.items():
            if self.dicts.get(name) is not zone:
                free_zone(zone)

    def close_all(self) -> None:
        for zone in self.dicts.values():
            try:
                free_zone(zone)
            except Exception:
                runtime.log.exception("freeing shared dict %s failed", zone.name)
        self.dicts = {}


def free_zone(zone: Any) -> None:
    """Unlink and close a zone (other processes keep their mapping until they close it)."""
    zone.unlink()
    zone.close()
