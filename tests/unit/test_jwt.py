"""edgeworker.lib.jwt.Verifier: pinned algorithms, attacks, claims, JWKS, the token cache."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edgeworker.lib.jwt import InvalidToken, Verifier, load_key_source

from ..support import free_port, wait_port

SECRET = b"s3cret-s3cret-s3cret-s3cret-s3cret!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(**kw) -> dict:
    now = int(time.time())
    base = {"sub": "42", "exp": now + 300, "iat": now}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hs256_roundtrip_and_claims():
    v = Verifier(["HS256"], secret=SECRET)
    tok = pyjwt.encode(claims(role="admin"), SECRET, algorithm="HS256")
    assert v.verify(tok)["role"] == "admin"


def test_rejects_alg_none():
    v = Verifier(["HS256"], secret=SECRET)
    tok = b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode()) + "."
    with pytest.raises(InvalidToken, match="not allowed"):
        v.verify(tok)
    with pytest.raises(ValueError):
        Verifier(["none"], secret=SECRET)


def test_rejects_algorithm_confusion_public_key_as_hmac_secret():
    pub = pem(RSA_KEY)
    # an attacker signs HS256 with the public key bytes as the secret
    forged = pyjwt.api_jws.PyJWS().encode(
        json.dumps(claims()).encode(), b"x" * 32, algorithm="HS256")
    v = Verifier(["RS256"], public_key=pub)
    with pytest.raises(InvalidToken, match="not allowed"):
        v.verify(forged)
    # configuring the public key as an HMAC secret is refused outright
    with pytest.raises(ValueError, match="confusion"):
        Verifier(["HS256"], secret=pub)
    with pytest.raises(ValueError, match="confusion"):
        Verifier(["HS256"], secret=b'{"kty":"RSA","n":"x","e":"AQAB"}')
    with pytest.raises(ValueError, match="mix"):
        Verifier(["HS256", "RS256"], secret=SECRET)


def test_algorithm_must_fit_the_key_type():
    with pytest.raises(ValueError, match="fits none"):
        Verifier(["ES256"], public_key=pem(RSA_KEY))
    with pytest.raises(ValueError, match="fits none"):
        Verifier(["ES384"], public_key=pem(EC_KEY))  # P-256 key
    # RS256 and ES256 allowed, RSA key: an ES256 token cannot be checked with it
    v = Verifier(["RS256", "ES256"], public_key=pem(RSA_KEY))
    tok = pyjwt.encode(claims(), EC_KEY, algorithm="ES256")
    with pytest.raises(InvalidToken, match="does not fit"):
        v.verify(tok)


@pytest.mark.parametrize("alg,key", [("RS256", RSA_KEY), ("PS384", RSA_KEY), ("ES256", EC_KEY),
                                     ("EdDSA", ED_KEY)])
def test_asymmetric_algorithms(alg, key):
    v = Verifier([alg], public_key=pem(key))
    assert v.verify(pyjwt.encode(claims(), key, algorithm=alg))["sub"] == "42"
    if alg[0] in "RP":
        wrong = RSA_KEY2
    elif alg == "EdDSA":
        wrong = ed25519.Ed25519PrivateKey.generate()
    else:
        wrong = ec.generate_private_key(ec.SECP256R1())
    other = Verifier([alg], public_key=pem(wrong))
    with pytest.raises(InvalidToken):
        other.verify(pyjwt.encode(claims(), key, algorithm=alg))


def test_bad_signature_and_tampering():
    v = Verifier(["HS256"], secret=SECRET)
    tok = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    head, body, sig = tok.split(".")
    tampered = head + "." + b64(json.dumps(claims(sub="1")).encode()) + "." + sig
    with pytest.raises(InvalidToken):
        v.verify(tampered)
    with pytest.raises(InvalidToken):
        v.verify(pyjwt.encode(claims(), SECRET + b"x", algorithm="HS256"))
    for junk in ("", "abc", "a.b.c", "....", "x" * 5000):
        with pytest.raises(InvalidToken):
            v.verify(junk)


def test_exp_required_and_checked_with_leeway():
    v = Verifier(["HS256"], secret=SECRET)
    with pytest.raises(InvalidToken, match="exp"):
        v.verify(pyjwt.encode(claims(exp=None), SECRET, algorithm="HS256"))
    with pytest.raises(InvalidToken, match="xpired"):
        v.verify(pyjwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256"))
    lenient = Verifier(["HS256"], secret=SECRET, leeway=30)
    assert lenient.verify(pyjwt.encode(claims(exp=int(time.time()) - 10), SECRET,
                                       algorithm="HS256"))


def test_nbf_and_iat_in_the_future():
    v = Verifier(["HS256"], secret=SECRET)
    future = int(time.time()) + 60
    with pytest.raises(InvalidToken):
        v.verify(pyjwt.encode(claims(nbf=future), SECRET, algorithm="HS256"))
    with pytest.raises(InvalidToken):
        v.verify(pyjwt.encode(claims(iat=future), SECRET, algorithm="HS256"))
    lenient = Verifier(["HS256"], secret=SECRET, leeway=120)
    assert lenient.verify(pyjwt.encode(claims(nbf=future), SECRET, algorithm="HS256"))


def test_issuer_and_audience():
    v = Verifier(["HS256"], secret=SECRET, issuer="https://idp", audience="api")
    ok = pyjwt.encode(claims(iss="https://idp", aud="api"), SECRET, algorithm="HS256")
    assert v.verify(ok)
    for bad in (claims(iss="https://evil", aud="api"), claims(iss="https://idp", aud="web"),
                claims(aud="api"), claims(iss="https://idp")):
        with pytest.raises(InvalidToken):
            v.verify(pyjwt.encode(bad, SECRET, algorithm="HS256"))
    multi = Verifier(["HS256"], secret=SECRET, audience=["api", "web"])
    assert multi.verify(pyjwt.encode(claims(aud="web"), SECRET, algorithm="HS256"))
    # a token with an audience is refused when none is configured (PyJWT rule)
    plain = Verifier(["HS256"], secret=SECRET)
    with pytest.raises(InvalidToken):
        plain.verify(pyjwt.encode(claims(aud="api"), SECRET, algorithm="HS256"))


def test_jwe_header_refused():
    v = Verifier(["HS256"], secret=SECRET)
    tok = pyjwt.encode(claims(), SECRET, algorithm="HS256", headers={"enc": "A256GCM"})
    with pytest.raises(InvalidToken, match="JWE"):
        v.verify(tok)


def test_verified_token_cache_ttl_bounded_by_exp():
    v = Verifier(["HS256"], secret=SECRET, cache_size=4)
    tok = pyjwt.encode(claims(exp=int(time.time()) + 2), SECRET, algorithm="HS256")
    assert v.verify(tok) is v.verify(tok)  # second answer from the cache
    assert v._cache.ttl(tok) <= 2.0
    time.sleep(2.2)
    with pytest.raises(InvalidToken):
        v.verify(tok)
    # bounded
    for i in range(10):
        v.verify(pyjwt.encode(claims(n=i), SECRET, algorithm="HS256"))
    assert v._cache.count() <= 4


def test_cache_is_per_verifier_settings():
    tok = pyjwt.encode(claims(aud="api"), SECRET, algorithm="HS256")
    a = Verifier(["HS256"], secret=SECRET, audience="api")
    b = Verifier(["HS256"], secret=SECRET, audience="other")
    assert a.verify(tok)
    with pytest.raises(InvalidToken):
        b.verify(tok)


def test_negative_cache_absorbs_repeated_bad_tokens(monkeypatch):
    v = Verifier(["HS256"], secret=SECRET)
    bad = pyjwt.encode(claims(), b"wrong-wrong-wrong-wrong-wrong-wrong", algorithm="HS256")
    calls = []
    real = pyjwt.decode
    monkeypatch.setattr("edgeworker.lib.jwt.pyjwt.decode",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(20):
        with pytest.raises(InvalidToken):
            v.verify(bad)
    assert len(calls) == 1


def test_load_key_source(tmp_path, monkeypatch):
    monkeypatch.setenv("EW_TEST_SECRET", "abc")
    assert load_key_source("env:EW_TEST_SECRET") == b"abc"
    with pytest.raises(ValueError):
        load_key_source("env:EW_TEST_UNSET_VAR")
    (tmp_path / "k.pem").write_bytes(pem(RSA_KEY))
    assert load_key_source("file:k.pem", str(tmp_path)) == pem(RSA_KEY)
    assert load_key_source("literal") == b"literal"


# ---------------------------------------------------------------------------- JWKS
def jwk(key, kid: str, alg: str | None = None) -> dict:
    d = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
                   if isinstance(key, rsa.RSAPrivateKey)
                   else pyjwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    d["kid"] = kid
    if alg:
        d["alg"] = alg
    return d


class JwksServer:
    """``python -m http.server`` serving ``jwks.json`` from a temp dir; counts GETs."""

    def __init__(self, tmp) -> None:
        self.dir = tmp
        self.port = free_port()
        self.log = open(tmp / "http.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            cwd=tmp, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def publish(self, *keys: dict) -> None:
        tmp = self.dir / "jwks.tmp"
        tmp.write_text(json.dumps({"keys": list(keys)}))
        os.replace(tmp, self.dir / "jwks.json")

    def fetches(self) -> int:
        self.log.flush()
        return (self.dir / "http.log").read_text().count("GET /jwks.json")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.log.close()


@pytest.fixture
def jwks(tmp_path):
    srv = JwksServer(tmp_path)
    yield srv
    srv.stop()


def test_jwks_fetch_and_verify(jwks):
    jwks.publish(jwk(RSA_KEY, "k1"), jwk(EC_KEY, "e1"))
    v = Verifier(["RS256", "ES256"], jwks_url=jwks.url)
    assert v.verify(pyjwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"}))
    assert v.verify(pyjwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "e1"}))
    # ES256 token claiming the RSA key's kid: alg does not fit that key
    with pytest.raises(InvalidToken):
        v.verify(pyjwt.encode(claims(n=1), EC_KEY, algorithm="ES256", headers={"kid": "k1"}))
    assert v.fetches == 1


def test_jwks_unknown_kid_refresh_is_throttled(jwks):
    jwks.publish(jwk(RSA_KEY, "k1"))
    v = Verifier(["RS256"], jwks_url=jwks.url, jwks_min_refresh=0.5)
    assert v.verify(pyjwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"}))
    for i in range(30):  # an attacker sending random kids
        with pytest.raises(InvalidToken):
            v.verify(pyjwt.encode(claims(n=i), RSA_KEY2, algorithm="RS256",
                                  headers={"kid": f"rand{i}"}))
    assert v.fetches <= 2
    # key rotation: the new kid is picked up once the throttle allows a refresh
    jwks.publish(jwk(RSA_KEY, "k1"), jwk(RSA_KEY2, "k2"))
    time.sleep(0.6)
    assert v.verify(pyjwt.encode(claims(), RSA_KEY2, algorithm="RS256", headers={"kid": "k2"}))
    assert jwks.fetches() == v.fetches


def test_jwks_failed_fetch_keeps_keys(jwks):
    jwks.publish(jwk(RSA_KEY, "k1"))
    v = Verifier(["RS256"], jwks_url=jwks.url, jwks_refresh=0.2, jwks_min_refresh=0.1)
    tok = lambda n: pyjwt.encode(claims(n=n), RSA_KEY, algorithm="RS256",  # noqa: E731
                                 headers={"kid": "k1"})
    assert v.verify(tok(0))
    (jwks.dir / "jwks.json").write_text("not json")  # broken IdP answer
    time.sleep(0.3)
    assert v.verify(tok(1))
    jwks.stop()  # IdP down
    time.sleep(0.3)
    assert v.verify(tok(2))
    assert v.fetches >= 3


def test_jwks_single_flight_under_gevent(jwks):
    """Many greenlets with an unknown kid at once: one fetch."""
    code = f"""
import gevent.monkey; gevent.monkey.patch_all()
import gevent, jwt, json, sys
sys.path.insert(0, {str(os.getcwd())!r})
from edgeworker.lib.jwt import Verifier, InvalidToken
v = Verifier(["RS256"], jwks_url={jwks.url!r})
def go(i):
    try:
        v.verify(sys.argv[1])
    except InvalidToken:
        pass
gevent.joinall([gevent.spawn(go, i) for i in range(50)])
print(v.fetches)
"""
    jwks.publish(jwk(RSA_KEY, "k1"))
    tok = pyjwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
    out = subprocess.run([sys.executable, "-c", code, tok], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "1", out.stderr
    assert jwks.fetches() == 1
