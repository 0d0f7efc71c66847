"""Exceptions that edgeworker raises to handler code and to the command line."""

from __future__ import annotations


class EdgeworkerError(Exception):
    """Base class of every edgeworker exception."""


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
    (``server[0].location[2].access``) and the cause. ``str()`` joins them, one a line,
    prefixed by the config file's path.
    """

    def __init__(self, file: str, errors: list[str]) -> None:
        self.file = file
        self.errors = list(errors)
        super().__init__("\n".join(f"{file}: {e}" for e in self.errors))


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
