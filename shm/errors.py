"""Exceptions raised by :class:`shm.SharedDict`."""

from __future__ import annotations


class ShmError(Exception):
    """Base class of every shm-specific error."""


class NoMemory(ShmError):
    """The zone has no room for the value ("no memory")."""

    def __init__(self, msg: str = "no memory") -> None:
        super().__init__(msg)


class NotFound(ShmError, KeyError):
    """The key is missing or expired ("not found"); also a ``KeyError``."""

    def __init__(self, msg: str = "not found") -> None:
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class NotANumber(ShmError):
    """``incr`` on a value that is not an int or float ("not a number")."""

    def __init__(self, msg: str = "not a number") -> None:
        super().__init__(msg)


class NotAList(ShmError):
    """A list operation on a key that holds a non-list value ("value not a list")."""

    def __init__(self, msg: str = "value not a list") -> None:
        super().__init__(msg)


class IsAList(ShmError):
    """A scalar read of a key that holds a list ("value is a list")."""

    def __init__(self, msg: str = "value is a list") -> None:
        super().__init__(msg)
