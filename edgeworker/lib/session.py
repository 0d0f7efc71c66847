"""Cookie sessions, signed and encrypted (what ``lua-resty-session`` gives OpenResty users).

::

    from edgeworker.lib.session import Sessions

    sessions = Sessions(secret=os.environ["SESSION_SECRET"], idle_timeout=900,
                        absolute_timeout=86400)                     # module level
    def login(req):
        s = sessions.open(req)
        s["user"] = "alice"
        s.regenerate()              # new identity after a privilege change
        s.save()                    # Set-Cookie on the response

    def me(req):
        s = sessions.open(req)
        if s.is_new: req.exit(401)
        return {"user": s["user"]}

The cookie is AES-256-GCM (``cryptography``) with a key derived from ``secret`` by HKDF-SHA256:
its content is unreadable and any change to it makes it invalid — a tampered, truncated,
foreign or expired cookie simply yields a **new, empty session** (never an error). Several
secrets may be given (``secret=[new, old]``): the first encrypts, all are tried to decrypt, so
secrets can be rotated without logging everybody out.

Storage: by default the data lives in the cookie (at most ``max_cookie_size`` bytes encoded,
``ValueError`` beyond). With ``storage="shm:NAME"`` or ``"redis:NAME"`` the cookie only carries
a random 256-bit session id and the data is stored server-side (expiring with the session), so
:meth:`Session.destroy` and :meth:`Session.regenerate` revoke the old cookie for good.

Timeouts: a session unused for ``idle_timeout`` seconds, or older than ``absolute_timeout``
seconds, is over. ``save()`` re-issues the cookie when the data changed or when the last save
is older than ``touch_interval`` (default a tenth of ``idle_timeout``), so calling it on every
request keeps active sessions alive at little cost.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import runtime

__all__ = ["Session", "Sessions"]

_VERSION = b"\x01"
_NONCE = 12
_enc = msgspec.json.Encoder().encode
_dec = msgspec.json.decode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret: str | bytes) -> AESGCM:
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(raw) < 16:
        raise ValueError("session secret must be at least 16 bytes")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"edgeworker session v1").derive(raw)
    return AESGCM(key)


class Sessions:
    """Session settings for a site; :meth:`open` gives the :class:`Session` of a request."""

    def __init__(
        self,
        secret: str | bytes | list[str | bytes],
        *,
        cookie_name: str = "session",
        storage: Any = "cookie",
        idle_timeout: float = 900.0,
        absolute_timeout: float = 86400.0,
        touch_interval: float | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = True,
        httponly: bool = True,
        samesite: str | None = "Lax",
        max_cookie_size: int = 4000,
    ) -> None:
        secrets = secret if isinstance(secret, list) else [secret]
        if not secrets:
            raise ValueError("at least one secret is required")
        self._aeads = [_derive(s) for s in secrets]
        if not cookie_name or any(c in cookie_name for c in ' ;,="\r\n'):
            raise ValueError(f"invalid cookie name {cookie_name!r}")
        if idle_timeout <= 0 or absolute_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        self.cookie_name = cookie_name
        self.storage = storage
        if storage != "cookie" and not (_is_store_spec(storage) or hasattr(storage, "get")):
            raise ValueError('storage must be "cookie", "shm:NAME", "redis:NAME", a SharedDict '
                             "or a redis client")
        self.idle_timeout = float(idle_timeout)
        self.absolute_timeout = float(absolute_timeout)
        self.touch_interval = (self.idle_timeout / 10 if touch_interval is None
                               else float(touch_interval))
        self.path, self.domain = path, domain
        self.secure, self.httponly, self.samesite = secure, httponly, samesite
        self.max_cookie_size = max_cookie_size
        self._aad = cookie_name.encode()

    # ------------------------------------------------------------------ cookie codec
    def seal(self, payload: dict[str, Any]) -> str:
        """Encrypt and authenticate ``payload`` (JSON-able) into a cookie value."""
        nonce = os.urandom(_NONCE)
        ct = self._aeads[0].encrypt(nonce, _enc(payload), self._aad)
        return _b64(_VERSION + nonce + ct)

    def unseal(self, value: str) -> dict[str, Any] | None:
        """The payload of a cookie value, or None if it is not one of ours (tampered,
        truncated, another secret or cookie name)."""
        try:
            raw = _unb64(value)
        except (ValueError, TypeError):
            return None
        if len(raw) < 1 + _NONCE + 16 or raw[:1] != _VERSION:
            return None
        nonce, ct = raw[1:1 + _NONCE], raw[1 + _NONCE:]
        for aead in self._aeads:
            try:
                payload = _dec(aead.decrypt(nonce, ct, self._aad))
            except InvalidTag:
                continue
            except msgspec.DecodeError:
                return None
            return payload if isinstance(payload, dict) else None
        return None

    # ------------------------------------------------------------------ storage
    def _store(self) -> Any:
        st = self.storage
        if isinstance(st, str):
            kind, _, name = st.partition(":")
            if kind == "shm":
                return runtime.shared[name]
            from .. import redis as ew_redis

            return ew_redis.client(name)
        return st

    def _load(self, sid: str) -> dict[str, Any] | None:
        raw = self._store().get("ew:sess:" + sid)
        if raw is None:
            return None
        try:
            data = _dec(raw)
        except msgspec.DecodeError:
            return None
        return data if isinstance(data, dict) else None

    def _write(self, sid: str, data: dict[str, Any], ttl: float) -> None:
        st = self._store()
        raw = _enc(data)
        if hasattr(st, "register_script"):  # redis
            st.set("ew:sess:" + sid, raw, px=max(1, int(ttl * 1000)))
        else:
            st.set("ew:sess:" + sid, raw, ttl)

    def _drop(self, sid: str) -> None:
        self._store().delete("ew:sess:" + sid)

    # ------------------------------------------------------------------ API
    def open(self, req: Any) -> Session:
        """The request's session: the one in its cookie if valid and not timed out, else a
        new empty one (``is_new``). Never raises for a bad cookie."""
        cached = req.ctx.get(("ew:session", self.cookie_name))
        if cached is not None:
            return cached
        s = self._from_cookie(req)
        req.ctx[("ew:session", self.cookie_name)] = s
        return s

    def _from_cookie(self, req: Any) -> Session:
        value = req.cookies.get(self.cookie_name)
        now = time.time()
        payload = self.unseal(value) if value else None
        if payload is not None:
            try:
                created, access = float(payload["c"]), float(payload["a"])
            except (KeyError, TypeError, ValueError):
                created = access = 0.0
            if now - access <= self.idle_timeout and now - created <= self.absolute_timeout:
                if self.storage == "cookie":
                    data = payload.get("d")
                    if isinstance(data, dict):
                        return Session(self, req, data, None, created, access, False)
                else:
                    sid = payload.get("s")
                    data = self._load(sid) if isinstance(sid, str) else None
                    if data is not None:
                        return Session(self, req, data, sid, created, access, False)
        return Session(self, req, {}, None, now, now, True, had_cookie=bool(value))

    def cookie_header(self, value: str, max_age: float | None) -> str:
        parts = [f"{self.cookie_name}={value}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if max_age is not None:
            parts.append(f"Max-Age={max(0, int(max_age))}")
        if self.secure:
            parts.append("Secure")
        if self.httponly:
            parts.append("HttpOnly")
        if self.samesite:
            parts.append(f"SameSite={self.samesite}")
        return "; ".join(parts)


def _is_store_spec(value: Any) -> bool:
    return isinstance(value, str) and value.partition(":")[0] in ("shm", "redis") \
        and bool(value.partition(":")[2])


class Session:
    """One request's session: a dict of JSON-able values plus ``save``/``destroy``/
    ``regenerate``. ``is_new`` is True when no valid session came with the request."""

    def __init__(self, owner: Sessions, req: Any, data: dict[str, Any], sid: str | None,
                 created: float, access: float, is_new: bool, had_cookie: bool = False) -> None:
        self._owner = owner
        self._req = req
        self.data = data
        self.id = sid
        self.created = created
        self.last_access = access
        self.is_new = is_new
        self._had_cookie = had_cookie
        self._dirty = False
        self._old_sid: str | None = None

    # dict-like
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._dirty = True

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self._dirty = True

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def pop(self, key: str, default: Any = None) -> Any:
        self._dirty = True
        return self.data.pop(key, default)

    def regenerate(self) -> None:
        """Give the session a new identity (keep the data): call after login or any privilege
        change (session fixation). With server-side storage the old id stops working at the
        next ``save``."""
        if self.id is not None:
            self._old_sid = self.id
        self.id = None
        self.created = time.time()
        self._dirty = True

    def save(self, force: bool = False) -> bool:
        """Write the session (Set-Cookie, and server-side storage) if it changed, if it is due
        for a touch, or with ``force``. Returns whether a cookie was set. ``ValueError`` if a
        cookie-stored session grows over ``max_cookie_size``."""
        o = self._owner
        now = time.time()
        if not (force or self._dirty or now - self.last_access >= o.touch_interval):
            return False
        if self.is_new and not self.data and not force:
            return False
        left = o.absolute_timeout - (now - self.created)
        ttl = min(o.idle_timeout, left)
        if ttl <= 0:
            self.destroy()
            return False
        payload: dict[str, Any] = {"c": self.created, "a": now}
        if o.storage == "cookie":
            payload["d"] = self.data
        else:
            if self.id is None:
                self.id = _b64(os.urandom(32))
            o._write(self.id, self.data, ttl)
            if self._old_sid:
                o._drop(self._old_sid)
                self._old_sid = None
            payload["s"] = self.id
        value = o.seal(payload)
        if len(value) + len(o.cookie_name) + 1 > o.max_cookie_size:
            raise ValueError(f"session cookie of {len(value)} bytes is over max_cookie_size "
                             f"({o.max_cookie_size}); use server-side storage")
        self._req.resp_headers.add("Set-Cookie", o.cookie_header(value, ttl))
        self.last_access = now
        self._dirty = False
        self.is_new = False
        return True

    def destroy(self) -> None:
        """End the session: clear the data, drop the server-side record, expire the cookie."""
        o = self._owner
        for sid in (self.id, self._old_sid):
            if sid is not None and o.storage != "cookie":
                o._drop(sid)
        self.data = {}
        self.id = self._old_sid = None
        self._dirty = False
        self.is_new = True
        self._req.resp_headers.add("Set-Cookie", o.cookie_header("", 0))
