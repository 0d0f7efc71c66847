"""edgeworker.lib.session: encrypted cookie sessions on real edgeworker processes."""

from __future__ import annotations

import json
import time

import pytest

from edgeworker.lib.session import Sessions

SECRET = "0123456789abcdef-session-secret"

HANDLER = """
import os
from edgeworker.lib.session import Sessions

sessions = Sessions(secret=os.environ.get("SECRETS", "0123456789abcdef-session-secret").split(","),
                    storage=os.environ.get("STORAGE", "cookie"), secure=False,
                    idle_timeout=float(os.environ.get("IDLE", "60")),
                    absolute_timeout=float(os.environ.get("ABSOLUTE", "3600")), touch_interval=0)

def login(req):
    s = sessions.open(req)
    s["user"] = req.args.get("user")
    s.regenerate()
    s.save()
    return "ok"

def me(req):
    s = sessions.open(req)
    if s.is_new:
        req.exit(401, "no session")
    s["hits"] = s.get("hits", 0) + 1
    s.save()
    return {"user": s["user"], "hits": s["hits"]}

def logout(req):
    sessions.open(req).destroy()
    return "bye"
"""

CONF = """
[shared_dict]
sessions = "1m"

[redis.default]
url = "{redis}"

[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/login"
  content = "app:login"
  [[server.location]]
  match = "/me"
  content = "app:me"
  [[server.location]]
  match = "/logout"
  content = "app:logout"
"""


def cookie_of(headers: dict[str, str]) -> str:
    return headers["set-cookie"].split(";", 1)[0]


@pytest.fixture
def site(server, redis_server):
    def start(**env: str):
        return server(CONF.format(redis=redis_server.url), files={"app.py": HANDLER},
                      env=env, workers=2)

    return start


@pytest.mark.parametrize("storage", ["cookie", "shm:sessions", "redis:default"])
def test_login_use_logout(site, storage):
    srv = site(STORAGE=storage)
    status, h, _ = srv.get("/login?user=alice")
    assert status == 200
    set_cookie = h["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Max-Age=" in set_cookie
    cookie = cookie_of(h)
    assert "alice" not in cookie  # encrypted, not just signed
    for n in (1, 2):
        status, h, body = srv.get("/me", headers={"Cookie": cookie})
        assert status == 200 and json.loads(body) == {"user": "alice", "hits": n}
        cookie = cookie_of(h)
    status, h, _ = srv.get("/logout", headers={"Cookie": cookie})
    assert "Max-Age=0" in h["set-cookie"]
    if storage != "cookie":  # server-side: the old cookie is revoked for good
        assert srv.get("/me", headers={"Cookie": cookie})[0] == 401


def test_tampered_or_foreign_cookie_is_a_new_session(site):
    srv = site()
    cookie = cookie_of(srv.get("/login?user=bob")[1])
    name, value = cookie.split("=", 1)
    flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    for bad in (f"{name}={flipped}", f"{name}={value[:-4]}", f"{name}=garbage",
                f"{name}=", "other=1"):
        assert srv.get("/me", headers={"Cookie": bad})[0] == 401, bad
    other_secret = Sessions("another-secret-another-secret", secure=False)
    forged = other_secret.seal({"c": time.time(), "a": time.time(), "d": {"user": "root"}})
    assert srv.get("/me", headers={"Cookie": f"session={forged}"})[0] == 401


def test_idle_and_absolute_timeouts(site):
    srv = site(IDLE="1", ABSOLUTE="2.5")
    cookie = cookie_of(srv.get("/login?user=c")[1])
    time.sleep(1.3)
    assert srv.get("/me", headers={"Cookie": cookie})[0] == 401  # idle
    cookie = cookie_of(srv.get("/login?user=c")[1])
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # keep it active: idle never reached
        status, h, _ = srv.get("/me", headers={"Cookie": cookie})
        assert status == 200
        cookie = cookie_of(h)
        time.sleep(0.4)
    time.sleep(0.8)
    assert srv.get("/me", headers={"Cookie": cookie})[0] == 401  # absolute


def test_regenerate_revokes_the_old_server_side_id(site):
    srv = site(STORAGE="shm:sessions")
    first = cookie_of(srv.get("/login?user=d")[1])
    second = cookie_of(srv.get("/login?user=d", headers={"Cookie": first})[1])
    assert first != second
    assert srv.get("/me", headers={"Cookie": second})[0] == 200
    assert srv.get("/me", headers={"Cookie": first})[0] == 401


def test_secret_rotation(site):
    old = site(SECRETS=SECRET)
    cookie = cookie_of(old.get("/login?user=e")[1])
    new = site(SECRETS="a-brand-new-secret-value," + SECRET)
    status, h, body = new.get("/me", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body)["user"] == "e"
    # re-issued with the new secret: the old-only site cannot read it
    assert old.get("/me", headers={"Cookie": cookie_of(h)})[0] == 401


def test_seal_roundtrip_and_bad_settings():
    s = Sessions(SECRET)
    assert s.unseal(s.seal({"a": 1})) == {"a": 1}
    assert s.unseal("!!!") is None
    with pytest.raises(ValueError):
        Sessions("short")
    with pytest.raises(ValueError):
        Sessions(SECRET, storage="memcached:x")
