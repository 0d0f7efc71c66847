"""``edgeworker.lib``: the edge library (what OpenResty users reach for in ``lua-resty-*``).

- :mod:`edgeworker.lib.limit` — rate limiters on a shared dict (per node) or Redis (cluster-wide);
- :mod:`edgeworker.lib.jwt` — JWT verification with pinned algorithms, JWKS and a verified-token
  cache;
- :mod:`edgeworker.lib.lrucache` — a per-worker LRU cache with TTLs;
- :mod:`edgeworker.lib.lock` — a shared-dict lock (``resty.lock``) with owner-checked unlock;
- :mod:`edgeworker.lib.cache` — a layered cache (``mlcache``): LRU, shared dict, callback;
- :mod:`edgeworker.lib.session` — signed and encrypted cookie sessions.

Each module is imported on its own (``from edgeworker.lib import limit``); importing this
package imports none of them.
"""
