"""Where a limiter counts: a shared dict (``shm:NAME`` or a ``shm.SharedDict``) or Redis
(``redis:NAME`` or a redis-py client); the ``Result`` of a decision and ``StoreError``."""

from __future__ import annotations

import math
import os
from typing import Any

from ... import runtime
from ...errors import StoreError

__all__ = ["Result", "StoreError"]


class Result:
    """What a limiter decided for one request.

    - ``allowed``: let the request through;
    - ``delay``: seconds the caller should wait before serving it (leaky bucket burst,
      concurrency burst); 0 otherwise;
    - ``limit``: the quota of the policy (requests per ``window``; for a concurrency limiter the
      maximum in flight);
    - ``remaining``: requests left in the quota after this one (never negative);
    - ``reset``: seconds until quota comes back (end of the window, or until the bucket allows
      the next request);
    - ``window``: the policy window in seconds;
    - ``retry_after``: whole seconds (≥ 1) a rejected client should wait (``Retry-After``);
    - ``committed``: this request was counted (matters for :meth:`Concurrency.leaving`);
    - ``error``: the store exception when the decision came from the fail mode, else None.
    """

    __slots__ = ("allowed", "delay", "limit", "remaining", "reset", "window", "committed", "error")

    def __init__(
        self,
        allowed: bool,
        limit: float,
        remaining: float,
        reset: float,
        window: float,
        delay: float = 0.0,
        committed: bool = False,
        error: BaseException | None = None,
    ) -> None:
        self.allowed = allowed
        self.delay = delay
        self.limit = limit
        self.remaining = max(0, int(remaining))
        self.reset = max(0.0, reset)
        self.window = window
        self.committed = committed
        self.error = error

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset))

    def __repr__(self) -> str:
        return (
            f"Result(allowed={self.allowed}, delay={self.delay:.3f}, limit={self.limit}, "
            f"remaining={self.remaining}, reset={self.reset:.3f}, error={self.error!r})"
        )


# ------------------------------------------------------------------------------ stores
def _is_redis(obj: Any) -> bool:
    return hasattr(obj, "register_script")


class _Store:
    """Resolves ``store`` lazily (after fork) to a shared dict or a redis client."""

    def __init__(self, store: Any) -> None:
        self.spec = store
        self.kind = "redis" if (_is_redis(store) or str(store).startswith("redis:")) else "shm"
        if isinstance(store, str):
            kind, sep, name = store.partition(":")
            if not sep or kind not in ("shm", "redis") or not name:
                raise ValueError(f'invalid store "{store}": expected "shm:NAME" or "redis:NAME"')
        self._obj: Any = None if isinstance(store, str) else store
        self._scripts: dict[str, Any] = {}
        self._lean = False  # self._obj is an edgeworker.redis_mux.Pool
        self._pid = os.getpid()

    @property
    def name(self) -> str:
        if isinstance(self.spec, str):
            return self.spec
        return f"{self.kind}:{getattr(self.spec, 'name', type(self.spec).__name__)}"

    def get(self) -> Any:
        """The shared dict, or the redis client: for ``"redis:NAME"`` with a plain URL this
        worker's lean pool (:mod:`edgeworker.redis_mux`), else its redis-py client. Resolved again
        in a forked child."""
        obj = self._obj
        if obj is None or (
            self.kind == "redis" and isinstance(self.spec, str) and os.getpid() != self._pid
        ):
            name = self.spec.partition(":")[2]
            self._lean = False
            if self.kind == "shm":
                obj = runtime.shared[name]
            else:
                from ... import redis as ew_redis

                obj = ew_redis.mux(name)
                if obj is None:
                    obj = ew_redis.client(name)
                else:
                    self._lean = True
            self._obj = obj
            self._pid = os.getpid()
            self._scripts.clear()
        return obj

    def script(self, name: str, src: str) -> Any:
        """A redis-py ``Script`` (EVALSHA; on NOSCRIPT it loads the script and retries)."""
        client = self.get()
        s = self._scripts.get(name)
        if s is None or s.registered_client is not client:
            s = self._scripts[name] = client.register_script(src)
        return s

    def run(self, name: str, src: str, keys: list[bytes], args: list[Any]) -> Any:
        """``EVALSHA`` the script; on ``NOSCRIPT`` (Redis restarted, ``SCRIPT FLUSH``,
        failover) load it and run it again. A plain client takes the short path: one pooled
        connection, one command, no redis-py command layers (about a third less CPU per call);
        a cluster client goes through redis-py's ``Script`` (key-slot routing). A lean pool
        (plain ``redis://``/``unix://`` URL) does it without redis-py's layers; the replies
        are the same (``int``, ``bytes``, ``list``)."""
        pool = self.get()
        if self._lean:
            script = self._scripts.get(name)
            if script is None:
                from ...redis_mux import Script

                script = self._scripts[name] = Script(src)
            return pool.evalsha(script, keys, args)
        script = self.script(name, src)
        pool = getattr(script.registered_client, "connection_pool", None)
        if pool is None:
            return script(keys=keys, args=args)
        from redis.exceptions import NoScriptError, ResponseError

        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                return conn.read_response()
            except NoScriptError:
                conn.send_command("SCRIPT", "LOAD", src)
                conn.read_response()
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return conn.read_response()
        except ResponseError:
            raise  # an error reply: the connection is still in a clean state
        except BaseException:
            conn.disconnect()  # a half-read reply must never reach the next user
            raise
        finally:
            pool.release(conn)


def _store_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, StoreError]
    try:
        import shm

        errs.append(shm.NoMemory)
    except Exception:  # pragma: no cover
        pass
    try:
        import redis

        errs.append(redis.RedisError)
    except Exception:  # pragma: no cover
        pass
    return tuple(errs)


def _bkey(key: Any) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")
    return str(key).encode()
