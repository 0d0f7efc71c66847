"""The live dashboard in real headless Chromium: it loads, renders, and shows the JSON's figures.

Needs the Debian ``chromium`` package (scripts/system-deps.sh); skipped when it is not installed,
a failure under ``CI=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ..support import require_tool, wait_until

CHROMIUM = require_tool("chromium", "chromium", "chromium-browser")

HANDLERS = {
    "app.py": """
        import edgeworker
        from edgeworker.status import metrics

        def hello(req):
            return "hello"

        def fill(req):
            for i in range(int(req.args.get("n"))):
                edgeworker.shared["cache"].set("k%d" % i, "v" * 100)
            metrics.count("limit_rejections", 3)
            metrics.upstream_event("backend", "127.0.0.1:9001", 200, 0.004)
            metrics.upstream_state("backend", "127.0.0.1:9002", "down")
            return "ok"
    """,
}

CONFIG = """
[main]
[shared_dict]
cache = "1m"
counters = "128k"

[upstream.backend]
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]

[[server]]
listen = ["127.0.0.1:{port}"]
server_name = ["dash.test"]
  [[server.location]]
  match = "= /status"
  status = "dashboard"
  [[server.location]]
  match = "= /status.json"
  status = "json"
  [[server.location]]
  match = "= /hello"
  content = "app:hello"
  [[server.location]]
  match = "= /fill"
  content = "app:fill"
"""


class Dom(HTMLParser):
    """Texts of elements with an id, and table rows with their data-* and cells by class."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.rows: list[dict] = []
        self._open: list[tuple[str, str | None, list[str]]] = []  # (tag, id, texts)
        self._row: dict | None = None
        self._cell: tuple[str, dict, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr":
            self._row = {"data": {k[5:]: v for k, v in a.items() if k.startswith("data-")},
                         "cells": {}}
            self.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = (a.get("class") or "", a, [])
        if tag not in ("br", "img", "meta", "link", "input", "i"):
            self._open.append((tag, a.get("id"), []))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            cls, attrs, texts = self._cell
            for c in cls.split():
                self._row["cells"][c] = {"text": "".join(texts).strip(),
                                         "value": attrs.get("data-value")}
            self._cell = None
        while self._open:
            t, ident, texts = self._open.pop()
            if ident:
                self.ids[ident] = "".join(texts).strip()
            if self._open:
                self._open[-1][2].extend(texts)
            if t == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][2].append(data)
        if self._cell is not None:
            self._cell[2].append(data)


def chromium(tmp: Path, url: str, *extra: str, budget: int = 4000) -> subprocess.CompletedProcess:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1500",
         f"--virtual-time-budget={budget}", *extra, url],
        capture_output=True, text=True, timeout=90, env=dict(os.environ, HOME=str(tmp)),
    )


def test_dashboard_renders_the_json_figures_in_chromium(server, tmp_path):
    srv = server(CONFIG, files=HANDLERS, workers=2)
    for _ in range(25):
        assert srv.get("/hello")[0] == 200
    assert srv.get("/fill?n=40")[0] == 200

    def counted(doc: dict) -> bool:
        hello = doc["http"]["server_zones"]["dash.test"]["locations"]["= /hello"]
        peer = doc["upstreams"]["backend"]["peers"]["127.0.0.1:9001"]
        return (hello["requests"] >= 25 and doc["counters"]["limit_rejections"] >= 3
                and peer["requests"] >= 1)

    wait_until(lambda: json.loads(srv.get("/status.json")[2]), counted,
               what="the requests, the limit rejections and the upstream call counted")

    url = f"http://127.0.0.1:{srv.port}/status"
    out = chromium(tmp_path, url, "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    dom = Dom()
    dom.feed(out.stdout)
    doc = json.loads(srv.get("/status.json")[2])

    assert dom.ids["conn-state"].startswith("live"), dom.ids.get("conn-state")
    assert dom.ids["version"] == doc["edgeworker"]["version"]
    assert dom.ids["master-pid"] == str(srv.master_pid) == str(doc["edgeworker"]["pid"])
    assert dom.ids["generation"] == str(doc["edgeworker"]["generation"])
    assert dom.ids["workers-count"] == "2"
    # the page's own polls add requests: the total shown is between the mix and now
    shown_total = int(dom.ids["requests-total"].replace(",", ""))
    assert 26 <= shown_total <= doc["requests"]["total"]

    def rows(**want):
        return [r for r in dom.rows if all(r["data"].get(k) == v for k, v in want.items())]

    (hello,) = rows(zone="dash.test", location="= /hello")
    assert hello["cells"]["requests"]["value"] == "25"
    hello_time = doc["http"]["server_zones"]["dash.test"]["locations"]["= /hello"]["request_time"]
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        assert float(hello["cells"][name]["value"]) == pytest.approx(quantile(q, hello_time))
        assert hello["cells"][name]["text"].endswith(" ms")
    assert hello["cells"]["r2xx"]["text"] == "25"
    assert int(hello["cells"]["requests"]["value"]) == (
        doc["http"]["server_zones"]["dash.test"]["locations"]["= /hello"]["requests"])

    for name in ("cache", "counters"):
        (row,) = rows(dict=name)
        for field in ("capacity", "entries", "evictions"):
            assert row["cells"][field]["value"] == str(doc["shared_dicts"][name][field]), field
    (cache,) = rows(dict="cache")
    assert cache["cells"]["entries"]["value"] == "40"
    assert cache["cells"]["capacity"]["text"] == "1.0 MiB"

    pids = {r["data"]["worker-pid"] for r in dom.rows if "worker-pid" in r["data"]}
    assert pids == {str(w["pid"]) for w in doc["workers"]} == {str(p) for p in srv.worker_pids()}

    (p1,) = rows(upstream="backend", peer="127.0.0.1:9001")
    assert p1["cells"]["requests"]["text"] == "1" and p1["cells"]["state"]["text"] == "up"
    assert p1["cells"]["response-time"]["text"] == "4.00 ms"
    (p2,) = rows(upstream="backend", peer="127.0.0.1:9002")
    assert p2["cells"]["state"]["text"] == "down"
    # the upstream's quantiles, from its response-time histogram (one response of 4 ms: in
    # the bucket 2.5 ms..5 ms, interpolated)
    (backend,) = [r for r in rows(upstream="backend") if "peer" not in r["data"]]
    assert float(backend["cells"]["p50"]["value"]) == pytest.approx(0.00375)
    assert float(backend["cells"]["p99"]["value"]) == pytest.approx(0.004975)
    assert backend["cells"]["p50"]["text"] == "3.75 ms"

    (lim,) = rows(counter="limit_rejections")
    assert lim["cells"]["value"]["value"] == "3" == str(doc["counters"]["limit_rejections"])

    # and it really renders: a screenshot of the page with its charts
    shot = tmp_path / "dashboard.png"
    out = chromium(tmp_path, url, f"--screenshot={shot}")
    assert out.returncode == 0, out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # a blank 1280x1500 page compresses to a few KiB
    keep = os.environ.get("EDGEWORKER_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def quantile(q: float, h: dict) -> float | None:
    """Prometheus's histogram_quantile over a status-document histogram (the dashboard's)."""
    if not h["count"]:
        return None
    rank = q * h["count"]
    lower = below = last = 0.0
    for le, n in h["buckets"].items():
        if le == "+Inf":
            return last
        upper = float(le)
        if n >= rank:
            return lower + (upper - lower) * (rank - below) / (n - below) if n > below else upper
        lower, below, last = upper, n, upper
    return last


PROBE = """<!doctype html>
<html><body><pre id="result">waiting</pre>
<iframe id="dash" src="/status" style="width:1200px;height:600px"></iframe>
<script>
// The dashboard in a frame of its own origin, its tab hidden then shown as a browser does:
// document.visibilityState changes and a visibilitychange event fires.
var frame = document.getElementById("dash"), out = document.getElementById("result");
var fetches = 0;  // the dashboard's polls: its calls of fetch()
function polls() { return fetches; }
function visibility(doc, hidden) {
  Object.defineProperty(doc, "visibilityState",
    {configurable: true, get: function () { return hidden ? "hidden" : "visible"; }});
  Object.defineProperty(doc, "hidden", {configurable: true, get: function () { return hidden; }});
  doc.dispatchEvent(new Event("visibilitychange"));
}
frame.addEventListener("load", function () {
  var doc = frame.contentDocument, r = {}, win = frame.contentWindow, real = win.fetch;
  win.fetch = function () { fetches++; return real.apply(win, arguments); };
  setTimeout(function () {
    r.visible = polls();
    visibility(doc, true);
    r.hidden_at = polls();
    setTimeout(function () {
      r.hidden_after = polls();
      visibility(doc, false);
      r.shown_at = polls();
      setTimeout(function () {
        r.shown_after = polls();
        out.textContent = JSON.stringify(r);
      }, 2500);
    }, 5000);
  }, 2500);
});
</script></body></html>
"""


def test_dashboard_polls_only_while_its_tab_is_visible(server, tmp_path):
    files = {"probe.py": f"""
        PAGE = {PROBE!r}

        def probe(req):
            req.content_type = "text/html; charset=utf-8"
            return PAGE
    """}
    srv = server("""
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          match = "= /status"
          status = "dashboard"
          [[server.location]]
          match = "= /probe"
          content = "probe:probe"
        """, files=files, workers=1)
    out = chromium(tmp_path, f"http://127.0.0.1:{srv.port}/probe", "--dump-dom", budget=15000)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = Dom()
    dom.feed(out.stdout)
    r = json.loads(dom.ids["result"])
    assert r["visible"] >= 1, r  # polling every second while visible
    assert r["hidden_after"] == r["hidden_at"], r  # 5 s hidden: not one poll
    assert r["shown_at"] == r["hidden_after"] + 1, r  # shown: a poll at once
    assert r["shown_after"] >= r["shown_at"] + 1, r  # and every second again
