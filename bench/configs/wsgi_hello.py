"""WSGI hello for the ``gunicorn -k gevent`` baseline of bench/http_bench.py.

Run by the bench as ``gunicorn -k gevent -w 2 --pythonpath bench/configs wsgi_hello:app``.
"""

from collections.abc import Callable, Iterable

BODY = b"hello\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Answer every request with 200 ``hello\\n``."""
    start_response("200 OK", HEADERS)
    return [BODY]
