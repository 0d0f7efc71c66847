"""HTTP/1.x head parsers side by side, in-process: httptools (llhttp), edgeworker's own C
(``edgeworker._speedups``) and gunicorn_h1c (picohttpparser), when it is installed.

Three heads: the HTTP bench's request (what wrk sends: ``GET /hello`` with one Host field), a
browser-like request with 9 fields, and a common upstream response (200, Content-Length, 5
fields, its 6-byte body in the same read). Each case parses one head the way its caller would:

* ``httptools``: a reused ``HttpRequestParser`` with the callbacks ``ServerProtocol`` sets
  (``on_url``, ``on_header``, ``on_headers_complete``, ...) collecting into a list; for the
  response a new ``HttpResponseParser`` per response, ``on_header`` a ``ResponseFields.add``
  and the status read in ``on_headers_complete`` (as ``edgeworker.proxy.client.Response``);
* ``ew ServerProtocol, llhttp``: ``ServerProtocol.feed`` with the whole-read C path turned off
  (llhttp, then ``on_headers_complete`` in Python): edgeworker's complete request parse, every
  rule included;
* ``ew ServerProtocol, C``: ``ServerProtocol.feed`` as it runs (``parse_request`` in C);
* ``ew parse_request (C)`` / ``ew parse_response_head (C)``: the C call alone, with the
  arguments the protocol and the proxy pass (the head's values or the response's tuple out);
* ``h1c ...``: gunicorn_h1c's whole-head calls (``parse_request``, ``parse_request_fast`` with
  method, path and fields read, ``H1CProtocol`` reused with ``reset()``, ``parse_response``).

The parsers alone (httptools, h1c) build less than edgeworker's calls, which also apply the
rules of edgeworker/http/protocol.py and build its ``RequestHead``: compare like with like.

``--strictness`` instead feeds the hostile-input corpus (tests/data/http_rejections.json and
smuggling.json) and a few valid probes to gunicorn_h1c and prints, per row, what edgeworker
answers and what gunicorn_h1c does: rejects (which exception) or accepts (and what it read).

Usage::

    .venv/bin/python bench/parsers.py                       # ns per head (timeit)
    .venv/bin/python bench/parsers.py --instructions        # also Ir per head (callgrind)
    .venv/bin/python bench/parsers.py --strictness          # the corpus through gunicorn_h1c

Exit status 0; 0 with a message and no figures when gunicorn_h1c is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httptools  # noqa: E402
from common import Table, finish  # noqa: E402

import edgeworker.http.protocol as protocol_module  # noqa: E402
from edgeworker.http.fields import RequestFields, ResponseFields, accel  # noqa: E402
from edgeworker.http.protocol import ServerProtocol  # noqa: E402

try:
    import gunicorn_h1c as h1c
except ImportError:
    h1c = None

HELLO = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BROWSER = (
    b"GET /search?q=edge&page=2 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: visitor=7f3a9c2e41d84b6f; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 07 Dec 2026 06:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 6\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b"hello\n"
)
HEADS = {"hello": HELLO, "browser": BROWSER, "response": RESPONSE}


# ------------------------------------------------------------------ the contenders


class _RequestSink:
    """httptools' callbacks as ServerProtocol has them: the URL collected, each field to a
    ``RequestFields.add``, the method read when the head is complete."""

    def __init__(self) -> None:
        self.url = b""
        self.fields = RequestFields()
        self.on_header = self.fields.add
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.url = b""
        self.fields.reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.method = self.parser.get_method()

    def on_message_complete(self) -> None:
        pass


class _ResponseSink:
    """httptools' response callbacks as edgeworker.proxy.client.ProxyResponse has them."""

    on_message_begin = on_status = on_chunk_header = on_chunk_complete = None

    def __init__(self) -> None:
        self.fields = ResponseFields()
        self.on_header = self.fields.add
        self.parser = httptools.HttpResponseParser(self)
        self.pending: list[bytes] = []

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        self.pending.append(data)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()


def _warm_protocol(data: bytes) -> None:
    """One llhttp pass over ``data``, which fills the tables ``parse_request`` relies on
    (methods llhttp reported, Host values validated)."""
    saved = protocol_module._parse_request
    protocol_module._parse_request = None
    try:
        events = ServerProtocol().feed(data)
    finally:
        protocol_module._parse_request = saved
    assert events and type(events[0]).__name__ == "RequestHead", events


def request_cases(data: bytes) -> dict[str, Callable[[], object]]:
    """Name → a call that parses the request head ``data`` once."""
    _warm_protocol(data)
    cases: dict[str, Callable[[], object]] = {}

    sink = _RequestSink()
    feed = sink.parser.feed_data
    cases["httptools (callbacks)"] = lambda: feed(data)

    llhttp_proto = ServerProtocol()

    def ew_llhttp() -> object:
        saved = protocol_module._parse_request
        protocol_module._parse_request = None
        try:
            return llhttp_proto.feed(data)
        finally:
            protocol_module._parse_request = saved

    cases["ew ServerProtocol, llhttp"] = ew_llhttp
    if accel is not None:
        proto = ServerProtocol()
        cases["ew ServerProtocol, C"] = lambda: proto.feed(data)
        parse_request = accel.parse_request
        args = (data, False, 100, 8192, 8192 - 16, None)
        assert parse_request(*args) is not None, "the C path does not take this head"
        cases["ew parse_request (C)"] = lambda: parse_request(*args)
    if h1c is not None:
        h1c_parse = h1c.parse_request
        cases["h1c parse_request (dict)"] = lambda: h1c_parse(data)
        fast = h1c.parse_request_fast
        cases["h1c parse_request_fast"] = lambda: fast(data)

        def fast_read() -> object:
            req = fast(data)
            return req.method, req.path, req.headers

        cases["h1c parse_request_fast + read"] = fast_read
        sorted_fields = RequestFields()

        def fast_sorted() -> object:
            req = fast(data)
            sorted_fields.reset()
            add = sorted_fields.add
            for name, value in req.headers:
                add(name, value)
            return req.method, req.path, sorted_fields

        cases["h1c parse_request_fast + RequestFields"] = fast_sorted
        proto_h1c = h1c.H1CProtocol()
        h1c_feed = proto_h1c.feed
        h1c_reset = proto_h1c.reset

        def h1c_protocol() -> object:
            h1c_feed(data)
            got = proto_h1c.method, proto_h1c.path, proto_h1c.headers
            h1c_reset()
            return got

        cases["h1c H1CProtocol + read"] = h1c_protocol
    return cases


def response_cases(data: bytes) -> dict[str, Callable[[], object]]:
    """Name → a call that parses the response ``data`` (head and its body) once."""
    cases: dict[str, Callable[[], object]] = {}

    def ht_response() -> object:
        sink = _ResponseSink()
        sink.parser.feed_data(data)
        return sink

    cases["httptools (callbacks)"] = ht_response
    if accel is not None:
        parse_head = accel.parse_response_head
        assert parse_head(data, False) is not None
        cases["ew parse_response_head (C)"] = lambda: parse_head(data, False)
    if h1c is not None:
        parse_response = h1c.parse_response
        cases["h1c parse_response (dict)"] = lambda: parse_response(data)

        def h1c_sorted() -> object:
            fields = ResponseFields()
            add = fields.add
            got = parse_response(data)
            for name, value in got["headers"]:
                add(name, value)
            return got, fields

        cases["h1c parse_response + ResponseFields"] = h1c_sorted
    return cases


def all_cases() -> dict[str, dict[str, Callable[[], object]]]:
    return {
        "hello": request_cases(HELLO),
        "browser": request_cases(BROWSER),
        "response": response_cases(RESPONSE),
    }


# ------------------------------------------------------------------ timing


def time_cases(number: int, repeat: int) -> dict[str, dict[str, float]]:
    """ns per head, the median of ``repeat`` runs of ``number`` calls, per head and case."""
    out: dict[str, dict[str, float]] = {}
    for head, cases in all_cases().items():
        out[head] = {}
        for name, fn in cases.items():
            fn()
            runs = timeit.repeat(fn, number=number, repeat=repeat)
            out[head][name] = statistics.median(runs) / number * 1e9
    return out


_IR = re.compile(r"Collected\s*:\s*(\d+)|I\s+refs:\s*([\d,]+)")


def _ir_run(head: str, case: str, count: int, tmp: str) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={tmp}/cg.%p",
        sys.executable,
        __file__,
        "--run-one",
        head,
        case,
        str(count),
    ]
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if "SIGILL" in done.stderr:
        return -1  # an instruction valgrind cannot run (SSE4.2 string compares in h1c)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr[-2000:]}")
    for match in _IR.finditer(done.stderr):
        return int((match.group(1) or match.group(2)).replace(",", ""))
    raise RuntimeError(f"no instruction count in callgrind's output: {done.stderr[-500:]}")


def instructions(low: int, high: int) -> dict[str, dict[str, float]]:
    """Instructions per head under callgrind: two runs of each case (``low`` and ``high``
    calls, the same start-up), the difference divided by ``high - low``."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for head, cases in all_cases().items():
            out[head] = {}
            for name in cases:
                print(f"callgrind: {head} / {name}", file=sys.stderr)
                a = _ir_run(head, name, low, tmp)
                b = _ir_run(head, name, high, tmp) if a >= 0 else -1
                if a < 0 or b < 0:
                    print("  SIGILL under valgrind: no count", file=sys.stderr)
                    continue
                out[head][name] = (b - a) / (high - low)
    return out


def run_one(head: str, case: str, count: int) -> None:
    fn = all_cases()[head][case]
    for _ in range(200):
        fn()
    for _ in range(count):
        fn()


# ------------------------------------------------------------------ strictness

#: valid requests edgeworker accepts, as probes of what gunicorn_h1c refuses or reads otherwise
PROBES: list[tuple[str, bytes, int]] = [
    ("absolute-form target", b"GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n", 200),
    ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 200),
    ("HTTP/1.2 served as 1.1", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 200),
    ("leading empty line", b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 200),
    ("obs-text in value", b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n", 200),
    ("CL leading zeros", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\n\r\nhello", 200),
    (
        "TE Chunked, OWS",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n",
        200,
    ),
    (
        "pipelined GETs",
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        200,
    ),
    ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", 200),
    ("request line 8300 bytes", b"GET /" + b"a" * 8280 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    ("101 fields", b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 100 + b"\r\n", 431),
    (
        "header section 9000 bytes",
        b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: " + b"v" * 8990 + b"\r\n\r\n",
        431,
    ),
]


#: upstream response heads: what llhttp (the proxy's parser) and gunicorn_h1c.parse_response do
RESPONSE_PROBES: list[tuple[str, bytes]] = [
    ("plain 200", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"),
    ("no reason phrase", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
    ("duplicate CL", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Length: 7\r\n\r\n"),
    ("CL + TE", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("CL plus sign", b"HTTP/1.1 200 OK\r\nContent-Length: +6\r\n\r\n"),
    ("TE gzip only", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("bare LF", b"HTTP/1.1 200 OK\nX: a\nContent-Length: 0\n\n"),
    ("NUL in value", b"HTTP/1.1 200 OK\r\nX: a\x00\r\nContent-Length: 0\r\n\r\n"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n"),
    ("two-digit status", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
    ("HTTP/2.0 status line", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
]


def _llhttp_response(data: bytes) -> str:
    class Sink:
        def __init__(self) -> None:
            self.fields: list[tuple[bytes, bytes]] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name, value))

    sink = Sink()
    try:
        httptools.HttpResponseParser(sink).feed_data(data)
    except httptools.HttpParserError as exc:
        return f"reject ({exc})"
    return f"accept {sink.fields}"


def _h1c_response(data: bytes) -> str:
    try:
        got = h1c.parse_response(data)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001
        return f"reject ({type(exc).__name__})"
    return f"accept {got['status']} {got['headers']}"


def _edgeworker_answer(data: bytes) -> str:
    events = ServerProtocol().feed(data)
    errors = [e for e in events if type(e).__name__ == "ProtocolError"]
    if errors:
        return str(errors[0].status)
    heads = [e for e in events if type(e).__name__ == "RequestHead"]
    return f"ok x{len(heads)}" if heads else "waits"


def _h1c_head(data: bytes) -> tuple[str, str]:
    """gunicorn_h1c.parse_request on the head, with edgeworker's limits."""
    try:
        got = h1c.parse_request(  # type: ignore[union-attr]
            data, limit_request_line=8192, limit_request_fields=100, limit_request_field_size=8192
        )
    except Exception as exc:  # noqa: BLE001 - the exception class is the finding
        return "reject", f"{type(exc).__name__}: {exc}"
    version = f"1.{got['minor_version']}"
    rest = len(data) - got["consumed"]
    return (
        "accept",
        f"{got['method'].decode('latin-1')} {got['path'][:30]!r} {version}, "
        f"{len(got['headers'])} fields, {rest} bytes after",
    )


def _h1c_message(data: bytes) -> tuple[str, str]:
    """gunicorn_h1c.H1CProtocol on the whole request (head, body, what follows)."""
    body: list[bytes] = []
    done: list[bool] = []
    parser = h1c.H1CProtocol(  # type: ignore[union-attr]
        on_body=body.append,
        on_message_complete=lambda: done.append(True),
        limit_request_line=8192,
        limit_request_fields=100,
        limit_request_field_size=8192,
    )
    try:
        parser.feed(data)
    except Exception as exc:  # noqa: BLE001
        return "reject", f"{type(exc).__name__}: {exc}"
    if not done:
        return "waits", "incomplete (waits for more)"
    framing = "chunked" if parser.is_chunked else f"CL={parser.content_length}"
    return "accept", f"{framing}, body {b''.join(body)[:20]!r}, rest {parser.remaining()[:24]!r}"


def strictness_rows() -> tuple[list[dict[str, object]], list[dict[str, str]]]:
    """The hostile corpus and the probes through edgeworker and gunicorn_h1c: (requests,
    upstream responses), one dict per row."""
    sys.path.insert(0, str(ROOT / "tests"))
    from data import REJECTION_TABLES, vectors  # type: ignore[import-not-found]

    rows: list[tuple[str, str, bytes, int]] = []
    for table in REJECTION_TABLES:
        rows += [(table, *row) for row in vectors("http_rejections.json", table)]
    rows += [("smuggling", *row) for row in vectors("smuggling.json", "smuggling")]
    rows += [("probe", *row) for row in PROBES]
    results = []
    for table, name, data, status in rows:
        head_verdict, head_detail = _h1c_head(data)
        msg_verdict, msg_detail = _h1c_message(data)
        results.append(
            {
                "table": table,
                "name": name,
                "edgeworker_expects": status,
                "edgeworker_answers": _edgeworker_answer(data),
                "h1c_parse_request": head_verdict,
                "h1c_parse_request_detail": head_detail,
                "h1c_protocol": msg_verdict,
                "h1c_protocol_detail": msg_detail,
            }
        )
    responses = [
        {
            "name": name,
            "httptools": _llhttp_response(data),
            "h1c_parse_response": _h1c_response(data),
        }
        for name, data in RESPONSE_PROBES
    ]
    return results, responses


def _h1c_rejects(r: dict[str, object]) -> bool:
    return r["h1c_parse_request"] == "reject" or r["h1c_protocol"] == "reject"


def strictness_table(results: list[dict[str, object]]) -> Table:
    bad = [r for r in results if r["table"] != "probe"]
    missed = [r for r in bad if not _h1c_rejects(r)]
    probes = [r for r in results if r["table"] == "probe" and _h1c_rejects(r)]
    rows = [
        ["hostile requests (tests/data: rejection tables, smuggling)", str(len(bad)), "-"],
        ["rejected by gunicorn_h1c (head or whole message)", str(len(bad) - len(missed)), "-"],
        [
            "accepted or waited for by gunicorn_h1c",
            str(len(missed)),
            ", ".join(str(r["name"]) for r in missed[:12]) + (" ..." if len(missed) > 12 else ""),
        ],
        [
            "valid probes edgeworker serves, refused by gunicorn_h1c",
            str(len(probes)),
            ", ".join(str(r["name"]) for r in probes),
        ],
    ]
    return Table(
        "Strictness: the hostile-input corpus edgeworker rejects (with httptools and its own "
        "rules, every row tested), fed to gunicorn_h1c",
        ["rows", "count", "which"],
        rows,
        notes=[
            "`.venv/bin/python bench/parsers.py --strictness` prints every row",
            "edgeworker reads the common whole request and upstream response heads with its own "
            "C (`parse_request`, `parse_response_head`: plain values in, plain tuples out) and "
            "every other head with httptools (llhttp) and the Python rules, which alone answer "
            "errors. gunicorn_h1c was not taken: its bare parse is about as fast as edgeworker's "
            "C call, but turning its result into edgeworker's sorted fields costs more than the "
            "whole C call (the `+ RequestFields` / `+ ResponseFields` rows), it lets through "
            f"{len(missed)} of the {len(bad)} hostile rows (edgeworker's rules would still be "
            f"needed around it) and refuses {len(probes)} valid requests edgeworker serves",
        ],
        right=(1,),
    )


def strictness(as_json: bool) -> int:
    results, responses = strictness_rows()
    if as_json:
        print(json.dumps({"requests": results, "responses": responses}, indent=1))
        return 0
    print(f"{'table':17} {'row':40} {'ew':>6}  {'h1c head':8} {'h1c msg':8} detail")
    for r in results:
        detail = (
            r["h1c_protocol_detail"]
            if r["h1c_protocol"] != "reject"
            else (
                r["h1c_parse_request_detail"]
                if r["h1c_parse_request"] != "reject"
                else r["h1c_protocol_detail"]
            )
        )
        print(
            f"{r['table']:17} {r['name'][:40]:40} {r['edgeworker_answers']:>6}  "
            f"{r['h1c_parse_request']:8} {r['h1c_protocol']:8} {detail[:90]}"
        )
    print(f"\n{'upstream response':22} {'httptools (llhttp)':48} gunicorn_h1c.parse_response")
    for r in responses:
        print(f"{r['name']:22} {r['httptools'][:48]:48} {r['h1c_parse_response'][:70]}")
    bad = [r for r in results if r["table"] != "probe"]
    both = sum(1 for r in bad if _h1c_rejects(r))
    print(
        f"\nhostile rows: {len(bad)}; rejected by gunicorn_h1c (head or message): {both}; "
        f"accepted or waiting: {len(bad) - both}"
    )
    return 0


# ------------------------------------------------------------------ main


def timing_tables(
    ns: dict[str, dict[str, float]],
    ir: dict[str, dict[str, float]] | None,
    args: argparse.Namespace,
) -> list[Table]:
    out = []
    for head, cases in ns.items():
        rows = []
        for name, value in cases.items():
            irs = "-" if ir is None else (f"{ir[head][name]:,.0f}" if name in ir[head] else "n/a")
            rows.append([name, f"{value:,.0f}", irs])
        out.append(
            Table(
                f"{head} head ({len(HEADS[head])} bytes): ns per head (median of {args.repeat} "
                f"runs of {args.number} calls)"
                + ("" if ir is None else " and instructions per head (callgrind)"),
                ["case", "ns/head", "Ir/head"],
                rows,
                notes=["n/a: gunicorn_h1c's SSE4.2 string compares stop valgrind (SIGILL)"]
                if ir is not None and any(n not in ir[head] for n in cases)
                else [],
                right=(1, 2),
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=20000, help="calls per timeit run")
    ap.add_argument("--repeat", type=int, default=7, help="timeit runs (their median is kept)")
    ap.add_argument("--instructions", action="store_true", help="also Ir per head (callgrind)")
    ap.add_argument("--low", type=int, default=2000, help="callgrind: calls of the short run")
    ap.add_argument("--high", type=int, default=12000, help="callgrind: calls of the long run")
    ap.add_argument("--strictness", action="store_true", help="the hostile corpus through h1c")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--run-one", nargs=3, metavar=("HEAD", "CASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_one:
        head, case, count = args.run_one
        run_one(head, case, int(count))
        return 0
    if h1c is None:
        print(
            "gunicorn_h1c is not installed (it is no dependency of edgeworker): nothing to "
            "compare. `make bench` or `.venv/bin/pip install gunicorn-h1c` installs it.",
            file=sys.stderr,
        )
        return 2
    if args.strictness:
        return strictness(False)
    started = time.time()
    print(
        f"python {sys.version.split()[0]}, httptools {httptools.__version__}, "
        f"gunicorn_h1c {h1c.__version__}, C accelerator {'on' if accel else 'off'}",
        file=sys.stderr,
    )
    ns = time_cases(args.number, args.repeat)
    ir = instructions(args.low, args.high) if args.instructions else None
    tables = [*timing_tables(ns, ir, args), strictness_table(strictness_rows()[0])]
    extra = {"versions": {"httptools": httptools.__version__, "gunicorn_h1c": h1c.__version__}}
    return finish("parsers", args, [], tables, started, extra)


if __name__ == "__main__":
    sys.exit(main())
