"""Handlers for the edgeworker side of bench/http_bench.py (see bench/configs/edgeworker.toml).

They mirror the nginx + lua baseline: ``hello`` is ``ngx.say("hello")``, ``count_ip`` is the
access-phase ``ngx.shared.counters:incr(ngx.var.binary_remote_addr, 1, 0)``.
"""

import edgeworker


def hello(req) -> str:
    """Content handler: ``hello\\n``."""
    return "hello\n"


def count_ip(req) -> None:
    """Access handler: count this request under the client's binary address."""
    edgeworker.shared["counters"].incr(req.binary_remote_addr, 1, init=0)


def count(req) -> str:
    """Content handler: the counter of the client's address, as text (for the bench's check)."""
    return f"{edgeworker.shared['counters'].get(req.binary_remote_addr, 0)}\n"
