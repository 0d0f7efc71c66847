"""The declarative rate limit of a location: ``limit = { rate, store, key, burst, fail, status }``.

``FEATURE`` is what ``edgeworker.config`` composes: the ``limit`` key (``Limit``), its checks
(the store is a declared shared dict or redis) and ``make_access``, the access handler built for
the location.

Keys:
    limit: a rate limit on the location, run first in the access phase: ``{ rate, store,
        key, burst, fail, status }`` (nginx ``limit_req``)
"""

from __future__ import annotations

import math
import time
from typing import Any

from ...confschema import Base, Context, Feature, NonNegInt, Rate, suggest
from .._util import count_event
from .limiters import FixedWindow
from .store import StoreError, _bkey, _store_errors

__all__ = ["FEATURE", "Limit", "make_access"]


class Limit(Base):
    """``limit = { … }``: declarative rate limit, run first in the access phase.

    Keys:
        rate: ``"N r/s"``, ``"N r/m"`` or ``"N r/h"``: requests per clock-aligned window
        store: ``"shm:NAME"`` (counted per node in a ``[shared_dict]``) or ``"redis:NAME"``
            (counted across nodes in a ``[redis.NAME]``)
        key: what is counted, text with ``$variables``
        burst: requests allowed beyond ``rate`` in a window
        fail: ``"open"`` or ``"closed"``: what happens when the store cannot be reached
        status: the answer over the limit, 400 to 599
    """

    rate: Rate
    store: str
    key: str = "$binary_remote_addr"
    burst: NonNegInt = 0
    fail: str = "open"
    status: int = 429


def check(loc: Any, path: str, ctx: Context) -> None:
    """The checks of a location's ``limit`` (its store is declared, fail and status valid)."""
    lim = loc.limit
    if lim is None:
        return
    path += ".limit"
    kind, sep, name = lim.store.partition(":")
    if not sep or kind not in ("shm", "redis"):
        ctx.err(
            f"{path}.store", f'invalid store "{lim.store}": expected "shm:NAME" or "redis:NAME"'
        )
    elif kind == "shm" and name not in ctx.shared:
        hint = suggest(name, ctx.shared) or " (declare it in [shared_dict])"
        ctx.err(f"{path}.store", f'no shared_dict named "{name}"{hint}')
    elif kind == "redis" and name not in ctx.tables["redis"]:
        hint = suggest(name, ctx.tables["redis"]) or f" (declare it as [redis.{name}])"
        ctx.err(f"{path}.store", f'no redis named "{name}"{hint}')
    if lim.fail not in ("open", "closed"):
        ctx.err(
            f"{path}.fail",
            f'invalid fail "{lim.fail}": expected "open" or "closed"'
            + suggest(lim.fail, ("open", "closed")),
        )
    if not 400 <= lim.status <= 599:
        ctx.err(f"{path}.status", f"invalid status {lim.status}: must be 400-599")
    if not lim.key.strip():
        ctx.err(f"{path}.key", "key must not be empty")


FEATURE = Feature(
    access="edgeworker.lib.limit.declarative:make_access",
    fields=(("limit", Limit | None, None),),
    check=check,
)


_PERIOD_NAMES = {1.0: "Second", 60.0: "Minute", 3600.0: "Hour", 86400.0: "Day"}


def _through_incr(incr: Any) -> Any:
    """SharedDict.incr_hit_path's call made by ``incr``, for a dict that has no hit path."""

    def hit(key: bytes, delta: int, init: int, init_ttl: float, pid: int) -> Any:
        return incr(key, delta, init, init_ttl)

    return hit


def make_access(loc: Any, app: Any) -> Any:
    """The access handler for a location's declarative ``limit = { … }``.

    Counts requests per ``key`` in clock-aligned fixed windows of the rate's period (Kong's
    model): ``"60r/m"`` allows 60 requests per minute, plus ``burst`` more; the key is prefixed
    with the location so two locations never share counters. Allowed responses carry
    ``RateLimit-Policy``, ``RateLimit`` (IETF draft) and ``X-RateLimit-Limit-<Period>`` /
    ``X-RateLimit-Remaining-<Period>`` (Kong); a rejection answers ``status`` (429) with
    ``Retry-After`` and JSON ``{"error":"rate_limited"}``. When the store fails: ``fail =
    "open"`` lets the request through (no RateLimit headers), ``"closed"`` answers 503 with
    ``Retry-After: 1`` and ``{"error":"rate_limit_unavailable"}``.
    """
    conf = loc.limit
    rate = conf.rate
    count, period = float(rate.count), float(rate.period)
    if count >= 1 and count.is_integer():
        quota, window = int(count), period
    elif count >= 1:
        quota, window = int(count), period * int(count) / count
    else:
        quota, window = 1, period / count
    quota += int(conf.burst)
    if conf.store.startswith("redis:"):
        from ... import redis as ew_redis

        ew_redis.configure(app.cfg.redis)
    prefix = f"ew:limit:{loc.path}:"
    lim = FixedWindow(conf.store, quota, window, prefix=prefix, fail="raise")
    template = conf.key
    fast_ip = template == "$binary_remote_addr"
    status = conf.status
    fail_open = conf.fail == "open"
    policy = f'"default";q={quota};w={max(1, int(round(window)))}'
    period_name = _PERIOD_NAMES.get(window)
    x_limit = f"X-RateLimit-Limit-{period_name}" if period_name else "X-RateLimit-Limit"
    x_remaining = f"X-RateLimit-Remaining-{period_name}" if period_name else "X-RateLimit-Remaining"
    # the four headers as one prepared block (names are tokens, values digits and quotes):
    # the server sends it as is unless a handler takes req.resp_headers. The block is
    # parts[0] + remaining + parts[1] + reset + parts[2] + remaining.
    parts = (
        f'\r\nRateLimit-Policy: {policy}\r\nRateLimit: "default";r=',
        ";t=",
        f"\r\n{x_limit}: {quota}\r\n{x_remaining}: ",
    )
    # str(remaining) joins the pieces around it, those of the last reset seen (the reset
    # changes once a second, remaining with every request)
    head, mid, tail = (part.encode("latin-1") for part in parts)
    around: tuple[bytes, ...] = ()
    around_reset = 0  # (a reset is >= 1)

    def pieces(reset: int) -> tuple[bytes, ...]:
        """The pieces of the block around ``remaining`` for ``reset`` (kept for the next)."""
        nonlocal around, around_reset
        around = (head, b"%b%d%b" % (mid, reset, tail), b"")
        around_reset = reset
        return around
    reject_body = b'{"error":"rate_limited"}'
    down_body = b'{"error":"rate_limit_unavailable"}'
    store_errors = _store_errors()
    shm_store = lim.store.kind == "shm"
    bprefix = prefix.encode()
    _time = time.time
    _ceil = math.ceil

    incr = None  # the shared dict's bound incr, once resolved (shm store)
    hit: Any = None  # its C hit path (SharedDict.incr_hit_path), or incr through _through_incr
    pid = 0  # the pid the hit path takes

    def get_incr() -> Any:
        nonlocal incr, hit, pid
        if incr is None:
            shared = lim.store.get()
            hit_path = getattr(shared, "incr_hit_path", None)  # (a stand-in may have none)
            fast = hit_path() if hit_path is not None else None
            incr = shared.incr
            if fast is not None:
                hit, pid = fast
            else:
                hit = _through_incr(incr)
        return incr

    def get_hit() -> Any:
        get_incr()
        return hit

    def unavailable(req: Any) -> None:
        """The store failed (already logged): let the request through, or answer 503."""
        if not fail_open:
            req.exit(503, down_body, headers={"Retry-After": "1"}, content_type="application/json")

    def failed(req: Any, exc: BaseException) -> None:
        """The shared dict failed (full…)."""
        lim._log.error("store failed: %s: %s", type(exc).__name__, exc)
        unavailable(req)

    def respond(req: Any, count: int, reset: int) -> None:
        remaining = quota - count if count < quota else 0
        block = (b"%d" % remaining).join(around if reset == around_reset else pieces(reset))
        if req.resp_fields is None:  # (Request.add_header_lines, inline)
            req.header_lines += block
        else:
            req.add_header_lines(block)
        if count > quota:
            count_event("limit_rejections")
            req.exit(
                status,
                reject_body,
                headers={"Retry-After": str(reset)},
                content_type="application/json",
            )

    def access_shm(req: Any) -> None:
        """The shared-dict store: one atomic incr, no Result object."""
        if fast_ip:
            k = bprefix + req.binary_remote_addr
        else:
            key = req.var.expand(template)
            k = bprefix + (key if key.__class__ is bytes else _bkey(key))
        left = window - _time() % window  # seconds to the window's end, > 0
        try:
            # the C hit path (None: it changed nothing, incr does the whole call)
            count = (hit or get_hit())(k, 1, 0, left, pid)
            if count is None:
                count = incr(k, 1, 0, left)
        except store_errors as exc:
            return failed(req, exc)
        reset = _ceil(left)  # whole seconds, >= 1
        if count > quota:  # rejected: its count is undone
            get_incr()(k, -1, 0, left)
            return respond(req, count, reset)
        # allowed: what respond does then, without its frame
        block = (b"%d" % (quota - count)).join(
            around if reset == around_reset else pieces(reset)
        )
        if req.resp_fields is None:
            req.header_lines += block
        else:
            req.add_header_lines(block)
        return None

    def access(req: Any) -> None:
        """Any other store (Redis): the limiter's Result."""
        key = req.binary_remote_addr if fast_ip else req.var.expand(template)
        try:
            res = lim.incoming(key)
        except StoreError:
            return unavailable(req)
        respond(req, quota - res.remaining if res.allowed else quota + 1, res.retry_after)

    return access_shm if shm_store else access
