"""``edgeworker.http2``: HTTP/2 to clients, its configuration and counters.

- ``schema``: the ``http2`` listen flag and the ``http2_*`` keys of ``[http]`` and
  ``[[server]]`` (composed by ``edgeworker.config``);
- ``STATS``: this worker's HTTP/2 counters (flushed to the status zone by
  ``edgeworker.status``).

The connection itself (one greenlet per stream) is ``edgeworker.server_h2``.
"""

#: indexes into ``STATS``: HTTP/2 connections accepted, streams opened, streams reset by
#: clients, connections closed for abuse (GOAWAY ENHANCE_YOUR_CALM), streams open now
CONNECTIONS, STREAMS, RESETS_RECEIVED, CALM, STREAMS_OPEN = range(5)
#: the names of the counters, in index order (the status zone's and Prometheus' labels)
STAT_NAMES = ("connections", "streams", "resets_received", "enhance_your_calm", "streams_open")
#: the counters of this process, bumped in place (plain ints: nothing allocated, no lock)
STATS = [0] * len(STAT_NAMES)

__all__ = [
    "CALM",
    "CONNECTIONS",
    "RESETS_RECEIVED",
    "STATS",
    "STAT_NAMES",
    "STREAMS",
    "STREAMS_OPEN",
]
