"""New connections spread over the workers: a table of open connections in shared memory.

Every worker accepts on the same listening sockets. The kernel wakes them all for a new
connection, and the first one to run takes it, and in the same loop every other connection
waiting. A burst of connections (a load balancer opening its keep-alive pool, a benchmark's
client) can so land all on one worker, which stays the busy one for as long as the connections
live while the others idle: on two cores under a proxied load, a quarter of the machine idle
and about a fifth fewer requests served. nginx avoids it with ``EPOLLEXCLUSIVE`` and one accept per wake-up; gevent's
event loop has neither.

So the master maps a small table before the first fork, which every worker inherits: per worker
id, the worker's generation and its open client connections. A worker that holds more than
``SLACK`` connections over the least loaded worker of its generation lets the others take the
next one: it waits ``DELAY`` (serving its own connections meanwhile), then accepts whatever is
still waiting. A worker that is stuck or gone thus never holds a connection back longer than
that; a worker that stops accepting (graceful exit) leaves the table.

The table is ``int64`` values: ``[0]`` the number of worker ids in use (the master raises it
before each fork), then two per worker id: its generation (``-1``: not accepting) and its count.
Each worker writes its own entry only, while the generation there is its own: a worker of a later
generation with the same id takes the entry over at start.
"""

from __future__ import annotations

import mmap

#: worker ids the table holds (a worker with a larger id is not balanced)
SLOTS = 1024
#: connections a worker may hold over the least loaded one before it lets the others go first
SLACK = 1
#: how long (seconds) a crowded worker lets the others take a new connection
DELAY = 0.002

_table: memoryview | None = None


def create() -> None:
    """In the master, before the first fork (kept across reloads: ids and generations say
    which entries count)."""
    global _table
    if _table is None:
        table = memoryview(mmap.mmap(-1, (1 + 2 * SLOTS) * 8)).cast("q")
        for i in range(1, 1 + 2 * SLOTS, 2):
            table[i] = -1
        _table = table


def reserve(worker_id: int) -> None:
    """In the master, before forking worker ``worker_id``: the readers scan its entry."""
    if _table is not None and worker_id < SLOTS and _table[0] <= worker_id:
        _table[0] = worker_id + 1


class Balance:
    """One worker's entry, and its view of the others of its generation."""

    __slots__ = ("_table", "_at", "_generation")

    def __init__(self, worker_id: int, generation: int) -> None:
        table = _table if 0 <= worker_id < SLOTS else None
        self._table = table
        self._at = 1 + 2 * worker_id
        self._generation = generation
        if table is not None:
            table[self._at + 1] = 0
            table[self._at] = generation

    def update(self, count: int) -> None:
        """This worker now holds ``count`` client connections."""
        table = self._table
        if table is not None and table[self._at] == self._generation:
            table[self._at + 1] = count

    def crowded(self, count: int) -> bool:
        """True when this worker, holding ``count`` connections, should let another worker of
        its generation take the next one."""
        table = self._table
        if table is None:
            return False
        generation = self._generation
        mine = self._at
        least = -1
        for at in range(1, 1 + 2 * table[0], 2):
            if at != mine and table[at] == generation:
                other = table[at + 1]
                if least < 0 or other < least:
                    least = other
        return least >= 0 and count > least + SLACK

    def leave(self) -> None:
        """This worker accepts no more: the others stop leaving connections to it."""
        table = self._table
        if table is not None and table[self._at] == self._generation:
            table[self._at] = -1
