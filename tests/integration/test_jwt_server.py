"""Declarative ``jwt = { … }`` on real edgeworker processes."""

from __future__ import annotations

import json
import time

import jwt as pyjwt

from ..unit.test_jwt import EC_KEY, RSA_KEY, SECRET, JwksServer, claims, jwk, pem

ECHO = """
import json

def echo(req):
    return {"user": req.headers.get("x-user-id"), "role": req.headers.get("x-user-role"),
            "claims_sub": (req.ctx.get("jwt_claims") or {}).get("sub")}

def touch(req):  # rewrite: takes the request headers before the jwt check runs
    req.headers.get("host")
"""

HS_CONF = """
[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  match = "/api"
  jwt = {{ secret = "env:EW_JWT_SECRET", algorithms = ["HS256"], realm = "api", claims_to_headers = {{ sub = "X-User-Id", role = "X-User-Role" }} }}
  content = "app:echo"
  [[server.location]]
  match = "/touched"
  rewrite = "app:touch"
  jwt = {{ secret = "env:EW_JWT_SECRET", algorithms = ["HS256"], realm = "api", claims_to_headers = {{ sub = "X-User-Id", role = "X-User-Role" }} }}
  content = "app:echo"
  [[server.location]]
  match = "/status"
  status = "json"
"""


def hs(**kw) -> str:
    return pyjwt.encode(claims(**kw), SECRET, algorithm="HS256")


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_missing_and_invalid_tokens(server):
    srv = server(HS_CONF, files={"app.py": ECHO}, env={"EW_JWT_SECRET": SECRET.decode()})
    status, h, body = srv.get("/api")
    assert status == 401
    assert json.loads(body) == {"error": "missing_token"}
    assert h["www-authenticate"] == 'Bearer realm="api"'
    assert h["content-type"].startswith("application/json")
    status, h, body = srv.get("/api", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert status == 401 and json.loads(body) == {"error": "missing_token"}
    for bad in ("garbage", hs(exp=int(time.time()) - 5),
                pyjwt.encode(claims(), b"another-secret-another-secret-xx", algorithm="HS256"),
                pyjwt.encode(claims(), RSA_KEY, algorithm="RS256")):
        status, h, body = srv.get("/api", headers=bearer(bad))
        assert status == 401, bad
        assert json.loads(body) == {"error": "invalid_token"}
        assert h["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'


def test_valid_token_forwards_claims_as_headers(server):
    srv = server(HS_CONF, files={"app.py": ECHO}, env={"EW_JWT_SECRET": SECRET.decode()})
    status, _, body = srv.get("/api", headers=bearer(hs(sub="u1", role="admin")))
    assert status == 200
    assert json.loads(body) == {"user": "u1", "role": "admin", "claims_sub": "u1"}
    # client-sent headers of the same name are replaced, or removed if the claim is absent
    spoof = {**bearer(hs(sub="u2")), "X-User-Id": "root", "X-User-Role": "admin"}
    for path in ("/api", "/touched"):  # headers as parsed, or already taken by a handler
        status, _, body = srv.get(path, headers=spoof)
        assert status == 200
        assert json.loads(body) == {"user": "u2", "role": None, "claims_sub": "u2"}, path
        # a claim outside latin-1 travels as UTF-8 bytes (handlers see them as latin-1 text)
        status, _, body = srv.get(path, headers=bearer(hs(sub="jos\u00e9\u4e2d")))
        assert status == 200, path
        assert json.loads(body)["user"].encode("latin-1").decode("utf-8") == "jos\u00e9\u4e2d"


def test_the_same_tokens_again_keep_their_own_claim_headers(server):
    """The claim headers prepared for a token are reused only for that token's claims."""
    srv = server(HS_CONF, files={"app.py": ECHO}, env={"EW_JWT_SECRET": SECRET.decode()})
    tokens = {f"u{i}": hs(sub=f"u{i}", role=f"r{i}") for i in range(3)}
    for _ in range(3):
        for sub, tok in tokens.items():
            status, _, body = srv.get("/api", headers={**bearer(tok), "X-User-Id": "root"})
            assert status == 200
            assert json.loads(body) == {"user": sub, "role": "r" + sub[1:], "claims_sub": sub}


def test_a_cached_token_stops_at_its_exp(server):
    """A token seen again is answered from the worker's cache of verified tokens, and that
    answer ends at the token's ``exp`` like a fresh verification would."""
    srv = server(HS_CONF, files={"app.py": ECHO}, env={"EW_JWT_SECRET": SECRET.decode()},
                 workers=1)
    exp = int(time.time()) + 2
    tok = hs(sub="brief", exp=exp)
    for _ in range(3):
        status, _, body = srv.get("/api", headers={**bearer(tok), "X-User-Role": "admin"})
        assert status == 200
        assert json.loads(body) == {"user": "brief", "role": None, "claims_sub": "brief"}
    time.sleep(max(0.0, exp - time.time()) + 0.2)
    status, _, body = srv.get("/api", headers=bearer(tok))
    assert status == 401 and json.loads(body) == {"error": "invalid_token"}


def test_rejections_are_counted(server):
    srv = server(HS_CONF, files={"app.py": ECHO}, env={"EW_JWT_SECRET": SECRET.decode()})
    for _ in range(3):
        assert srv.get("/api")[0] == 401
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        doc = json.loads(srv.get("/status")[2])
        if doc.get("counters", {}).get("jwt_rejections") == 3:
            break
        time.sleep(0.2)
    assert doc["counters"]["jwt_rejections"] == 3


def test_public_key_file(server):
    files = {"app.py": ECHO, "pub.pem": pem(EC_KEY).decode()}
    conf = """
[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  match = "/"
  jwt = {{ public_key = "file:pub.pem", algorithms = ["ES256"], issuer = "https://idp", audience = "api", leeway = 5, claims_to_headers = {{ sub = "X-User-Id" }} }}
  content = "app:echo"
"""
    srv = server(conf, files=files)
    good = pyjwt.encode(claims(iss="https://idp", aud="api"), EC_KEY, algorithm="ES256")
    assert srv.get("/", headers=bearer(good))[0] == 200
    wrong_aud = pyjwt.encode(claims(iss="https://idp", aud="x"), EC_KEY, algorithm="ES256")
    assert srv.get("/", headers=bearer(wrong_aud))[0] == 401
    # alg confusion: HS256 signed with the PEM as secret
    forged = pyjwt.api_jws.PyJWS().encode(
        json.dumps(claims(iss="https://idp", aud="api")).encode(), b"y" * 32,
        algorithm="HS256")
    assert srv.get("/", headers=bearer(forged))[0] == 401


def test_jwks_url(server, tmp_path):
    jwks = JwksServer(tmp_path)
    try:
        jwks.publish(jwk(RSA_KEY, "k1"))
        conf = f"""
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/"
  jwt = {{{{ jwks_url = "{jwks.url}", algorithms = ["RS256"], claims_to_headers = {{{{ sub = "X-User-Id" }}}} }}}}
  content = "app:echo"
"""
        srv = server(conf, files={"app.py": ECHO}, workers=1)
        tok = pyjwt.encode(claims(sub="j"), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
        for _ in range(5):
            status, _, body = srv.get("/", headers=bearer(tok))
            assert status == 200 and json.loads(body)["user"] == "j"
        unknown = pyjwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"})
        for _ in range(10):
            assert srv.get("/", headers=bearer(unknown))[0] == 401
        # first fetch + at most one throttled refresh for the unknown kid
        assert jwks.fetches() <= 2
    finally:
        jwks.stop()


def test_two_authorization_headers_are_invalid(server):
    srv = server(HS_CONF, files={"app.py": ECHO}, env={"EW_JWT_SECRET": SECRET.decode()})
    tok = hs()
    raw = (f"GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
           f"Authorization: Bearer {tok}\r\nConnection: close\r\n\r\n").encode()
    resp = srv.raw(raw)
    assert resp.startswith(b"HTTP/1.1 401")
    assert b'{"error":"invalid_token"}' in resp
