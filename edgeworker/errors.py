"""Every exception edgeworker defines, in one place.

The module that raises one also exports it where users look for it: ``LockTimeout`` is
``edgeworker.lib.lock.LockTimeout``, ``UpstreamError`` is ``edgeworker.proxy.client.UpstreamError``
and so on; both names are the same class.
"""

from __future__ import annotations


class EdgeworkerError(Exception):
    """Base class of the exceptions of the runtime API (phases, timers, configuration, the
    HTTP client)."""


class PhaseError(EdgeworkerError):
    """An API was called in a phase (or process) where it makes no sense.

    The message names the API and the phase, e.g.
    ``req.say() is not allowed in the access phase``.
    """


class TooManyTimers(EdgeworkerError):
    """``timer.at``/``timer.every`` over ``max_pending_timers``: "too many pending timers"."""


class ProcessExiting(EdgeworkerError):
    """A timer with a delay > 0 was created while the worker is exiting."""


class Expired(EdgeworkerError, TimeoutError):
    """A deadline armed on an I/O watchdog (``edgeworker.io``) passed: thrown into the greenlet
    still waiting. A ``TimeoutError``: the transport's callers catch it as one."""


class ConfigError(EdgeworkerError):
    """The configuration is invalid.

    ``errors`` holds one message per problem, each naming the config path
    (``server[0].location[2].access``) and the cause. ``messages`` are the same, each
    prefixed by its place in the file, nginx style: ``FILE:LINE: path: cause``. ``places``
    gives the places; by default each is asked of ``file`` when it knows the lines of the
    config (``Config.file``, an ``edgeworker.confsource.SourceFile``), else it is ``file``
    alone. ``str()`` joins the messages, one a line.
    """

    def __init__(self, file: str, errors: list[str], places: list[str] | None = None) -> None:
        self.file = file
        self.errors = list(errors)
        if places is None:
            where = getattr(file, "where", None)
            places = [where(e) if where is not None else file for e in self.errors]
        self.messages = [f"{place}: {e}" for place, e in zip(places, self.errors, strict=True)]
        super().__init__("\n".join(self.messages))


class RequestExit(BaseException):
    """Raised by ``req.exit()``/``req.redirect()`` to unwind the handler.

    A ``BaseException`` so that a handler's ``except Exception`` does not swallow it.
    """


class Jump(BaseException):
    """Raised by ``req.set_uri(uri, jump=True)``: re-match the location with the new uri."""


class ClientGone(Exception):
    """The client closed the connection or stopped reading (send_timeout)."""


class Drain(Exception):
    """Thrown into an idle connection's greenlet when the worker starts its graceful exit."""


class BodyError(Exception):
    """The request body is broken (400) or late (408): ``status`` is the answer."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# ---- request paths (edgeworker.uri)


class BadURI(ValueError):
    """The path cannot be normalized (it climbs above the root, or decodes to a NUL)."""


# ---- handler specs (edgeworker.handlers)


class HandlerError(ImportError):
    """A handler spec could not be turned into a callable. ``spec`` is the ``module:function``."""

    def __init__(self, spec: str, message: str) -> None:
        super().__init__(f'cannot import "{spec}": {message}')
        self.spec = spec


# ---- Redis connections (edgeworker.redis)


class RedisNotConfigured(KeyError):
    """``client(name)`` for a name that has no ``[redis.NAME]`` section."""

    def __str__(self) -> str:
        return str(self.args[0])


# ---- HTTP/1.x framing (edgeworker.http.framing)


class FramingError(Exception):
    """A message whose framing is refused: ``status`` is the answer (400, or 501 for a transfer
    coding that is not implemented), ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ---- the HTTP client for handlers (edgeworker.http.request)


class RequestError(EdgeworkerError):
    """The request failed: bad URL, unresolvable host, refused, reset, or invalid response."""


class RequestTimeout(RequestError, TimeoutError):
    """Connecting, a write or a read took longer than ``timeout``."""


# ---- shared-dict locks (edgeworker.lib.lock)


class LockError(Exception):
    """Misuse: ``lock()`` while this object already holds a lock."""


class LockTimeout(LockError):
    """The lock stayed taken for ``timeout`` seconds."""


# ---- JWT (edgeworker.lib.jwt)


class InvalidToken(Exception):
    """The token was refused; ``str(exc)`` says why (for logs, not for clients)."""


# ---- rate limiting (edgeworker.lib.limit)


class StoreError(Exception):
    """The limiter's store failed (Redis unreachable or too slow, shared dict full…)."""


# ---- the proxy (edgeworker.proxy)


class UpstreamError(Exception):
    """An upstream exchange failed. ``status`` is what the client gets (502, or 504 for
    timeouts); ``sent`` is True once any request byte may have reached the upstream."""

    status = 502
    #: what ``proxy_next_upstream`` calls it: "error", "timeout" or "invalid_header"
    kind = "error"

    def __init__(self, reason: str, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class UpstreamTimeout(UpstreamError):
    """connect/send/read timeout: 504."""

    status = 504
    kind = "timeout"


class UpstreamInvalid(UpstreamError):
    """The upstream answered something that is not a valid HTTP response head (or too big a
    head): 502, nginx's ``invalid_header``."""

    kind = "invalid_header"


# ---- the proxy's resolver (edgeworker.proxy)


class ResolveError(Exception):
    """The host name could not be resolved (and no earlier answer exists)."""
