"""The declarative JWT check of a location: ``jwt = { algorithms, secret | public_key | jwks_url,
issuer, audience, leeway, claims_to_headers, realm }``.

``FEATURE`` is what ``edgeworker.config`` composes: the ``jwt`` key (``Jwt``), its checks (known
algorithms, HMAC and public-key algorithms not mixed, one key source that fits them) and the
build function ``edgeworker.lib.jwt:make_access``, which loads the keys when a worker builds the
location.

Keys:
    jwt: a bearer-token check on the location, in the access phase after ``limit``:
        ``{ algorithms, secret, public_key or jwks_url, issuer, audience, leeway,
        claims_to_headers, realm }``
"""

from __future__ import annotations

from typing import Any

from ..confschema import Base, Context, Duration, Feature, StrList, abspath, suggest

__all__ = ["FEATURE", "JWT_ASYMMETRIC", "JWT_HMAC", "Jwt"]

JWT_HMAC = frozenset({"HS256", "HS384", "HS512"})
JWT_ASYMMETRIC = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES256K",
        "ES384",
        "ES512",
        "EdDSA",
    }
)


class Jwt(Base):
    """``jwt = { … }``: bearer-token validation, run in the access phase after ``limit``.

    Key sources (``secret``, ``public_key``) may be literal, ``env:NAME`` or ``file:PATH``
    (a relative PATH is made absolute against the config folder).

    Keys:
        algorithms: the accepted algorithms (HS*, RS*, PS*, ES*, ``EdDSA``; never
            ``"none"``); HMAC and public-key ones are not mixed
        secret: the HMAC secret, for the HS* algorithms
        public_key: the public key (PEM), for the public-key algorithms
        jwks_url: a JWKS URL, fetched on first use and refreshed every 300 s
        issuer: the required ``iss``
        audience: the accepted ``aud``, one or a list
        leeway: tolerance on ``exp``, ``nbf`` and ``iat``
        claims_to_headers: ``{ claim = "Header-Name" }``: claims set as request fields (a
            client's field of that name is replaced, or removed without the claim)
        realm: the realm of ``WWW-Authenticate``
    """

    algorithms: tuple[str, ...]
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: StrList | None = None
    leeway: Duration = Duration(0.0)
    claims_to_headers: dict[str, str] = {}
    realm: str = "edgeworker"


def check(loc: Any, path: str, ctx: Context) -> None:
    """The checks of a location's ``jwt``; a ``file:`` key source is made absolute."""
    jwt = loc.jwt
    if jwt is None:
        return
    path += ".jwt"
    algs = set(jwt.algorithms)
    if not algs:
        ctx.err(f"{path}.algorithms", "at least one algorithm is required")
    bad = [a for a in jwt.algorithms if a not in JWT_HMAC | JWT_ASYMMETRIC]
    if bad:
        ctx.err(
            f"{path}.algorithms",
            f'unsupported algorithm "{bad[0]}": expected any of '
            + ", ".join(sorted(JWT_HMAC | JWT_ASYMMETRIC))
            + suggest(bad[0], sorted(JWT_HMAC | JWT_ASYMMETRIC)),
        )
    hmac, asym = algs & JWT_HMAC, algs & JWT_ASYMMETRIC
    if hmac and asym:
        ctx.err(
            f"{path}.algorithms",
            "do not mix HMAC (HS*) and public-key algorithms in one location (algorithm confusion)",
        )
    sources = [k for k in ("secret", "public_key", "jwks_url") if getattr(jwt, k) is not None]
    if len(sources) != 1:
        ctx.err(
            path,
            "exactly one key source is required: secret, public_key or jwks_url "
            f"(found: {', '.join(sources) or 'none'})",
        )
    if hmac and jwt.secret is None:
        ctx.err(path, f"{', '.join(sorted(hmac))} needs a secret")
    if asym and jwt.secret is not None:
        ctx.err(
            f"{path}.secret",
            f"{', '.join(sorted(asym))} needs public_key or jwks_url, not a secret",
        )
    for key in ("secret", "public_key"):
        value = getattr(jwt, key)
        if isinstance(value, str) and value.startswith("file:"):
            setattr(jwt, key, "file:" + abspath(ctx.base, value[5:]))
        elif isinstance(value, str) and value.startswith("env:") and not value[4:]:
            ctx.err(f"{path}.{key}", "env: needs a variable name")
    if jwt.jwks_url is not None and not jwt.jwks_url.startswith(("http://", "https://")):
        ctx.err(f"{path}.jwks_url", f'invalid url "{jwt.jwks_url}": expected http(s)://')
    ctx.check_header_names(f"{path}.claims_to_headers", jwt.claims_to_headers.values())


FEATURE = Feature(
    access="edgeworker.lib.jwt:make_access",
    fields=(("jwt", Jwt | None, None),),
    check=check,
)
