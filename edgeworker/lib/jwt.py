"""JWT verification at the edge: pinned algorithms, keys from config, PEM or JWKS, cached results.

::

    from edgeworker.lib.jwt import Verifier, InvalidToken

    verify = Verifier(algorithms=["RS256"], jwks_url="https://idp.example/jwks.json",
                      issuer="https://idp.example/", audience="api")
    def access(req):
        try:
            claims = verify.verify(token_from(req))
        except InvalidToken as exc:
            req.exit(401, ...)

Rules (the attacks of reference §3.1 closed by construction):

- ``algorithms`` is required and pinned; ``none`` is never accepted; a token's ``alg`` must be
  in the list **and** fit the key: HS* only with a ``secret``, RS*/PS* only with an RSA key,
  ES256/ES384/ES512/ES256K only with an EC key on the matching curve, EdDSA only with an
  Ed25519/Ed448 key. A secret that looks like a public key, certificate, SSH key or JWK is
  refused (algorithm confusion: CVE-2017-11424, CVE-2022-29217). Tokens with a JWE ``enc``
  header are refused.
- ``exp`` is required; ``exp``, ``nbf`` and ``iat`` (not in the future) are checked with
  ``leeway`` seconds; ``issuer`` and ``audience`` when configured (PyJWT's rules).
- JWKS (``jwks_url``): fetched with the pooled HTTP client on first use, refreshed every
  ``jwks_refresh`` seconds (the refresh is done by one request while others keep using the
  current keys). A token with an unknown ``kid`` triggers a refresh at most once per
  ``jwks_min_refresh`` seconds per worker, and concurrent requests share that one fetch
  (single-flight). A failed or invalid fetch never empties the key set: the old keys stay.
- Verified-token cache (per worker, per verifier — so keyed with the verifier's settings):
  at most ``cache_size`` tokens; an entry lives until the token's ``exp`` (at most
  ``cache_ttl`` seconds) and ``exp``/``nbf`` are re-checked on every hit. Tokens that failed
  (bad signature, malformed) are remembered for ``negative_ttl`` seconds so a flood of the same
  bad token costs one verification.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate

from .. import runtime
from ..errors import InvalidToken
from ._util import QuietLog, count_event
from .lrucache import LRUCache

_INF = float("inf")

__all__ = ["InvalidToken", "Verifier", "load_key_source", "make_access"]

HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVE_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512",
                 "secp256k1": "ES256K"}
JWK_CURVE_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
OKP_ALGS = frozenset({"EdDSA"})
SUPPORTED = HMAC_ALGS | RSA_ALGS | frozenset(EC_CURVE_ALGS.values()) | OKP_ALGS


def load_key_source(value: str | bytes | None, base: str | None = None) -> bytes | None:
    """Resolve a config key value: ``env:NAME`` (environment variable), ``file:PATH`` (file
    contents; relative to ``base``) or the literal value. ``ValueError`` if the variable is
    unset or empty, ``OSError`` if the file cannot be read."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if value.startswith("env:"):
        name = value[4:]
        v = os.environ.get(name)
        if not v:
            raise ValueError(f"environment variable {name} is not set (jwt key source)")
        return v.encode()
    if value.startswith("file:"):
        path = value[5:]
        if base and not os.path.isabs(path):
            path = os.path.join(base, path)
        with open(path, "rb") as f:
            return f.read()
    return value.encode()


def _looks_asymmetric(secret: bytes) -> bool:
    s = secret.strip()
    return (
        s.startswith(b"-----BEGIN")
        or s.startswith((b"ssh-", b"ecdsa-sha2-", b"sk-ssh-", b"sk-ecdsa-"))
        or (s.startswith(b"{") and b'"kty"' in s)
        or s.startswith(b"\x30\x82")  # DER
    )


def _algs_for_key(key: Any) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_CURVE_ALGS.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return OKP_ALGS
    return frozenset()


def _load_public_key(pem: bytes) -> Any:
    if b"CERTIFICATE" in pem:
        return load_pem_x509_certificate(pem).public_key()
    key = load_pem_public_key(pem)
    return key


def _jwk_algs(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        fitting = RSA_ALGS
    elif kty == "EC":
        alg = JWK_CURVE_ALGS.get(jwk.get("crv", ""))
        fitting = frozenset({alg}) if alg else frozenset()
    elif kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448"):
        fitting = OKP_ALGS
    else:  # "oct" keys (HMAC) never come from a JWKS here: they would allow confusion
        return frozenset()
    if jwk.get("alg"):
        return fitting & {jwk["alg"]}
    return fitting


class Verifier:
    """Verifies JWTs for one policy (see the module docstring).

    Exactly one key source: ``secret`` (HS*), ``public_key`` (PEM public key or certificate,
    or a ``cryptography`` public key object) or ``jwks_url``. ``ValueError`` when the key does
    not fit any of ``algorithms`` or the configuration is unsafe.
    """

    def __init__(
        self,
        algorithms: Iterable[str],
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | Any | None = None,
        jwks_url: str | None = None,
        issuer: str | Iterable[str] | None = None,
        audience: str | Iterable[str] | None = None,
        leeway: float = 0.0,
        require: Iterable[str] = ("exp",),
        cache_size: int = 10_000,
        cache_ttl: float = 300.0,
        negative_ttl: float = 5.0,
        jwks_refresh: float = 300.0,
        jwks_min_refresh: float = 30.0,
        jwks_timeout: float = 5.0,
    ) -> None:
        algs = tuple(algorithms)
        if not algs:
            raise ValueError("algorithms is required")
        bad = [a for a in algs if a not in SUPPORTED]
        if bad:
            raise ValueError(f"unsupported algorithm {bad[0]!r} ('none' is never accepted)")
        if sum(x is not None for x in (secret, public_key, jwks_url)) != 1:
            raise ValueError("exactly one of secret, public_key, jwks_url is required")
        self.algorithms = frozenset(algs)
        hmac = self.algorithms & HMAC_ALGS
        if hmac and self.algorithms - HMAC_ALGS:
            raise ValueError("do not mix HS* and public-key algorithms (algorithm confusion)")
        self._static_key: Any = None
        self._static_algs: frozenset[str] = frozenset()
        if secret is not None:
            if not hmac:
                raise ValueError("a secret is only for HS256/HS384/HS512")
            key = secret.encode() if isinstance(secret, str) else bytes(secret)
            if _looks_asymmetric(key):
                raise ValueError("the secret looks like a public key, certificate or JWK: "
                                 "refusing it as an HMAC secret (algorithm confusion)")
            if not key:
                raise ValueError("empty secret")
            self._static_key, self._static_algs = key, hmac
        elif public_key is not None:
            if hmac:
                raise ValueError("HS* algorithms need a secret, not a public key")
            if isinstance(public_key, (str, bytes)):
                pem = public_key.encode() if isinstance(public_key, str) else public_key
                try:
                    key_obj = _load_public_key(pem)
                except ValueError as exc:
                    raise ValueError(f"public_key is not a PEM public key: {exc}") from None
            else:
                key_obj = public_key
            fits = _algs_for_key(key_obj) & self.algorithms
            if not fits:
                raise ValueError(f"the public key fits none of {sorted(self.algorithms)}")
            self._static_key, self._static_algs = key_obj, fits
        else:
            if hmac:
                raise ValueError("HS* algorithms need a secret, not a JWKS")
            if not str(jwks_url).startswith(("http://", "https://")):
                raise ValueError("jwks_url must be http:// or https://")
        self.jwks_url = jwks_url
        self.issuer = issuer if issuer is None or isinstance(issuer, str) else tuple(issuer)
        self.audience = (audience if audience is None or isinstance(audience, str)
                         else list(audience))
        self.leeway = float(leeway)
        self._options = {"require": list(require)}
        self.cache_ttl = float(cache_ttl)
        self.negative_ttl = float(negative_ttl)
        self._cache = LRUCache(cache_size)
        self._bad = LRUCache(max(16, cache_size // 10))
        # JWKS state
        self.jwks_refresh = float(jwks_refresh)
        self.jwks_min_refresh = float(jwks_min_refresh)
        self.jwks_timeout = float(jwks_timeout)
        self._jwks: dict[str | None, tuple[Any, frozenset[str]]] = {}
        self._jwks_at = -1e18  # monotonic time of the last successful fetch
        self._jwks_try = -1e18  # monotonic time of the last attempt
        self._jwks_lock = threading.Lock()
        self._jwks_log = QuietLog(runtime.log, f"jwks {jwks_url}")
        self.fetches = 0  # JWKS fetch attempts (for tests and the status page)

    # ------------------------------------------------------------------ verify
    def verify(self, token: str | bytes) -> dict[str, Any]:
        """The token's claims if it is valid now, else ``InvalidToken``.

        The returned dict is shared with the cache: treat it as read-only.
        """
        if isinstance(token, bytes):
            token = token.decode("latin-1")
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None:
            claims, exp, nbf = hit
            if exp <= now - self.leeway:
                self._cache.delete(token)
                raise InvalidToken("token expired")
            if nbf is not None and nbf > now + self.leeway:
                raise InvalidToken("token not yet valid")
            return claims
        bad = self._bad.get(token)
        if bad is not None:
            raise InvalidToken(bad)
        try:
            claims = self._verify_uncached(token)
        except InvalidToken as exc:
            if getattr(exc, "cacheable", False):
                self._bad.set(token, str(exc), self.negative_ttl)
            raise
        exp = float(claims["exp"])
        nbf = claims.get("nbf")
        ttl = min(self.cache_ttl, exp + self.leeway - now)
        if ttl > 0:
            self._cache.set(token, (claims, exp, float(nbf) if nbf is not None else None), ttl)
        return claims

    def _verify_uncached(self, token: str) -> dict[str, Any]:
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.InvalidTokenError as exc:
            raise _cacheable(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _cacheable(f"algorithm {alg!r} is not allowed")
        if "enc" in header:
            raise _cacheable("encrypted tokens (JWE) are not accepted")
        if self.jwks_url is None:
            key, fits = self._static_key, self._static_algs
        else:
            key, fits = self._jwks_key(header.get("kid"))
        if alg not in fits:
            raise _cacheable(f"algorithm {alg} does not fit the key")
        try:
            return pyjwt.decode(
                token, key, algorithms=[alg], options=self._options,
                audience=self.audience, issuer=self.issuer, leeway=self.leeway,
            )
        except (pyjwt.ExpiredSignatureError, pyjwt.ImmatureSignatureError) as exc:
            raise InvalidToken(str(exc)) from None
        except pyjwt.InvalidTokenError as exc:
            raise _cacheable(f"{type(exc).__name__}: {exc}") from None
        except (ValueError, TypeError) as exc:  # odd keys/claims inside PyJWT
            raise _cacheable(f"invalid token: {exc}") from None

    # ------------------------------------------------------------------ JWKS
    def _jwks_key(self, kid: Any) -> tuple[Any, frozenset[str]]:
        if not self._jwks:
            self._refresh(wait=True, reason="empty")
        elif time.monotonic() - self._jwks_at > self.jwks_refresh:
            self._refresh(wait=False, reason="stale")  # one request refreshes, others go on
        found = self._lookup(kid)
        if found is None and self._jwks:
            # unknown kid: refresh at most once per jwks_min_refresh, single-flight
            self._refresh(wait=True, reason="kid")
            found = self._lookup(kid)
        if found is None:
            raise InvalidToken(f"no key for kid {kid!r}" if self._jwks else "no JWKS keys")
        return found

    def _lookup(self, kid: Any) -> tuple[Any, frozenset[str]] | None:
        keys = self._jwks
        if kid is None:
            if None in keys:
                return keys[None]
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _refresh(self, *, wait: bool, reason: str) -> None:
        """Fetch the JWKS unless another request just did (single-flight) or the last attempt
        is too recent: ``jwks_min_refresh`` seconds, 1 s while no key is known yet."""
        before = self._jwks_try
        if wait:
            acquired = self._jwks_lock.acquire(timeout=self.jwks_timeout + 1)
        else:
            acquired = self._jwks_lock.acquire(blocking=False)
        if not acquired:
            return
        try:
            if self._jwks_try != before:
                return  # another request fetched while we waited: use its result
            now = time.monotonic()
            gap = self.jwks_min_refresh if self._jwks else 1.0
            if now - self._jwks_try < gap:
                return
            if reason == "stale" and now - self._jwks_at <= self.jwks_refresh:
                return
            self._jwks_try = now
            self._fetch()
        finally:
            self._jwks_lock.release()

    def _fetch(self) -> None:
        self.fetches += 1
        try:
            doc = _http_get_json(self.jwks_url, self.jwks_timeout)
            keys = doc["keys"]
            if not isinstance(keys, list):
                raise ValueError("'keys' is not a list")
        except Exception as exc:
            self._jwks_log.error("fetch failed, keeping %d known keys: %s: %s",
                                 len(self._jwks), type(exc).__name__, exc)
            return
        new: dict[str | None, tuple[Any, frozenset[str]]] = {}
        for jwk in keys:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            fits = _jwk_algs(jwk) & self.algorithms
            if not fits:
                continue
            try:
                key = pyjwt.PyJWK(jwk, algorithm=sorted(fits)[0]).key
            except Exception:
                continue
            new[jwk.get("kid")] = (key, fits)
        if not new:
            self._jwks_log.error("fetch returned no usable key, keeping %d known keys",
                                 len(self._jwks))
            return
        self._jwks = new
        self._jwks_at = time.monotonic()


def _cacheable(msg: str) -> InvalidToken:
    exc = InvalidToken(msg)
    exc.cacheable = True  # type: ignore[attr-defined]
    return exc


def _http_get_json(url: str, timeout: float) -> Any:
    try:
        from .. import httpclient
    except ImportError:  # pragma: no cover - the pooled client is part of edgeworker
        httpclient = None
    if httpclient is not None:
        resp = httpclient.request("GET", url, headers={"Accept": "application/json"},
                                  timeout=timeout)
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        return json.loads(resp.body)
    import urllib.request  # pragma: no cover

    with urllib.request.urlopen(url, timeout=timeout) as r:  # pragma: no cover
        return json.loads(r.read())


# ------------------------------------------------------------------------------ declarative
def _header_value(v: Any) -> str | None:
    if v is None:
        return None
    if v.__class__ is str:
        s = v
    elif isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, (str, int, float)):
        s = str(v)
    elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        s = ",".join(str(x) for x in v)
    else:
        s = json.dumps(v, separators=(",", ":"))
    if "\r" in s or "\n" in s or "\x00" in s:
        return None
    return s


def make_access(loc: Any, app: Any) -> Any:
    """The access handler for a location's declarative ``jwt = { … }``.

    A key that cannot be loaded (unset ``env:`` variable, unreadable ``file:``, a key that fits
    none of the algorithms) raises ``ConfigError`` naming the location.

    Reads ``Authorization: Bearer <token>``. No bearer token: 401 ``{"error":"missing_token"}``
    with ``WWW-Authenticate: Bearer realm="…"``; a token that fails verification: 401
    ``{"error":"invalid_token"}`` with ``WWW-Authenticate: Bearer realm="…",
    error="invalid_token"``. A valid token: each ``claims_to_headers`` claim is set as a request
    header (replacing any client-sent header of that name, and removing it when the claim is
    absent), seen by later handlers and the upstream; the claims are in
    ``req.ctx["jwt_claims"]``.
    """
    conf = loc.jwt
    file = getattr(app.cfg, "file", None)
    base = os.path.dirname(file) if file else None
    try:
        verifier = Verifier(
            conf.algorithms,
            secret=load_key_source(conf.secret, base),
            public_key=load_key_source(conf.public_key, base),
            jwks_url=conf.jwks_url,
            issuer=conf.issuer,
            audience=(list(conf.audience) if conf.audience and len(conf.audience) > 1
                      else (conf.audience[0] if conf.audience else None)),
            leeway=float(conf.leeway),
        )
    except (ValueError, OSError) as exc:
        from ..errors import ConfigError

        raise ConfigError(file or "<config>", [f"{loc.path}.jwt: {exc}"]) from None
    realm = conf.realm.replace("\\", "\\\\").replace('"', '\\"')
    missing_hdr = {"WWW-Authenticate": f'Bearer realm="{realm}"'}
    invalid_hdr = {"WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token"'}
    missing_body = b'{"error":"missing_token"}'
    invalid_body = b'{"error":"invalid_token"}'
    # (claim, header name, lower-case name as the parser stores it)
    mapping = tuple(
        (claim, name, name.lower().encode("latin-1"))
        for claim, name in conf.claims_to_headers.items()
    )
    log = runtime.log
    lnames = frozenset(lname for _, _, lname in mapping)
    # Tokens verified recently, by the Authorization value exactly as the client sent it:
    # (claims, the claim header fields to append, exp + leeway (wall clock), the end of the
    # verifier's cache entry (monotonic)). A hit answers like the verifier's cache would (the
    # same claims, until the same ends) without its lookup or rebuilding the header fields.
    hot: dict[bytes, tuple[dict, list[tuple[bytes, bytes]], float, float]] = {}
    hot_max = 4096

    def claim_fields(claims: dict) -> list[tuple[bytes, bytes]]:
        """The fields that replace the client's mapped ones: the mapping applied in order
        (two claims mapped to one header: the later one wins, as with ``req.headers``)."""
        out: list[tuple[bytes, bytes]] = []
        for claim, _, lname in mapping:
            value = _header_value(claims.get(claim))
            out = [f for f in out if f[0] != lname]
            if value is not None:
                out.append((lname, value.encode("utf-8")))
        return out

    def remember(auth: bytes, token: str, claims: dict) -> list[tuple[bytes, bytes]]:
        fields = claim_fields(claims)
        left = verifier._cache.ttl(token)  # the verifier's own cache entry, if it kept one
        if left is not None and left > 0:
            if len(hot) >= hot_max:
                hot.clear()
            exp = float(claims["exp"]) if "exp" in claims else _INF
            hot[auth] = (claims, fields, exp + verifier.leeway, time.monotonic() + left)
        return fields

    def reject(req: Any, body: bytes, headers: dict[str, str]) -> None:
        count_event("jwt_rejections")
        req.exit(401, body, headers=headers, content_type="application/json")

    def access(req: Any) -> None:
        raw = req.head.headers if req.parsed_headers is None else None
        if raw is not None:  # the request headers are still as parsed: read them as bytes
            auth = None
            seen = 0
            clash = False  # a client-sent field named like a claim header
            for n, v in raw:
                if n == b"authorization":
                    auth = v
                    seen += 1
                elif n in lnames:
                    clash = True
            if seen == 1:
                known = hot.get(auth)
                if (
                    known is not None
                    and time.time() < known[2]
                    and time.monotonic() < known[3]
                ):
                    if clash:
                        raw[:] = [f for f in raw if f[0] not in lnames]
                    raw += known[1]
                    req.ctx["jwt_claims"] = known[0]
                    return
                values = [auth.decode("latin-1")]
            else:
                values = [v.decode("latin-1") for n, v in raw if n == b"authorization"]
        else:
            values = req.headers.getall("authorization")
        if not values:
            reject(req, missing_body, missing_hdr)
        if len(values) > 1:
            reject(req, invalid_body, invalid_hdr)
        scheme, _, token = values[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            reject(req, missing_body, missing_hdr)
        try:
            claims = verifier.verify(token)
        except InvalidToken as exc:
            if log.isEnabledFor(10):
                log.debug("jwt rejected on %s: %s", req.uri, exc)
            reject(req, invalid_body, invalid_hdr)
        if raw is not None:  # still as parsed: replace the client's fields in place
            fields = remember(auth, token, claims)
            if clash:
                raw[:] = [f for f in raw if f[0] not in lnames]
            raw += fields
            req.ctx["jwt_claims"] = claims
            return
        for claim, name, _lname in mapping:
            value = _header_value(claims.get(claim))
            headers = req.headers
            if value is None:
                if name in headers:
                    del headers[name]
            else:  # (a header value is latin-1 text: UTF-8 bytes travel as such)
                headers[name] = value.encode("utf-8").decode("latin-1")
        req.ctx["jwt_claims"] = claims

    access.verifier = verifier  # type: ignore[attr-defined]
    return access
