#!/usr/bin/env python3
"""Shared dict benchmark: shm.SharedDict against redis-py, Manager().dict() and nginx's
ngx.shared.DICT, in µs per operation, the contenders measured in turn within each round.

SharedDict runs in this process (a 64 MiB zone); redis-py talks to a redis-server the bench
starts on a free loopback port; ``Manager().dict()`` is a proxy to a multiprocessing manager
process; ngx.shared.DICT is timed by nginx itself, inside one ``content_by_lua`` loop
(``bench/nginx_shdict/nginx.conf.in``, one worker). Each round measures every contender once
(the order reversed every other round), each figure the **median** of ``--repeat`` (5) timed
loops of ``--n`` operations; ``--rounds`` (5) rounds. The goals (bench/common.py's Goal) are
ratios of two contenders' µs/op taken within each round:

    incr: redis-py ÷ SharedDict                 >= 50 (SharedDict at least 50x faster)
    get, set: Manager().dict() ÷ SharedDict     >= 40
    incr: SharedDict ÷ ngx.shared.DICT          <= 40 (at most 40x slower)
    incr: 2 processes on one key, throughput ÷ 1 process      >= 1.0

get and set ÷ ngx.shared.DICT, get ÷ redis-py and the lock cost of two processes on one key
are shown for context. A round whose measurements ran beside other load (other processes
> 20 % of the machine) is marked and left out. One default run takes about 1.5 minutes.

Usage: python bench/shm_bench.py [--n 100000] [--n-slow 5000] [--n-nginx 1000000] [--repeat 5]
[--rounds 5] [--quick] [--no-redis] [--no-nginx] [--json FILE] [--check]. See bench/README.md.

Exit status: 0 after a run (1 with ``--check`` unless every goal is PASS), 2 when the harness
cannot run (redis-server, redis-py, nginx or its lua module missing without --no-redis /
--no-nginx, a server that does not start or answers wrongly), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import (  # noqa: E402
    DISTURBED_PCT,
    CpuMeter,
    Goal,
    HarnessError,
    ProcessRegistry,
    Table,
    add_common_args,
    child_pids,
    disturbed_rounds,
    finish,
    free_port,
    logger,
    per_round_ratio,
    run_harness,
    tool_version,
    wait_for_port,
)

from shm import SharedDict  # noqa: E402

HOST = "127.0.0.1"
NGINX_MODULES = "/usr/lib/nginx/modules"
SHM, REDIS, MANAGER, NGINX = "SharedDict", "redis-py", "Manager().dict()", "ngx.shared.DICT"
CONTENDERS = (SHM, REDIS, MANAGER, NGINX)
#: the operations of each contender, in the order of the table
OPS = {
    SHM: ("get", "set", "incr", "add", "lpush_lpop", "incr_2proc", "incr_2proc_sep"),
    REDIS: ("get", "incr"),
    MANAGER: ("get", "set"),
    NGINX: ("get", "set", "incr", "add", "lpush_lpop"),
}
ROW_OPS = ("get", "set", "incr", "add", "lpush_lpop", "incr_2proc", "incr_2proc_sep")

#: (name, op, numerator, denominator, comparison, target): numerator µs/op ÷ denominator µs/op
#: of ``op`` within each round; ``target`` None: a figure for context
GOALS: tuple[tuple[str, str, str, str, str, float | None], ...] = (
    ("incr: redis-py ÷ SharedDict", "incr", REDIS, SHM, ">=", 50.0),
    ("get: Manager().dict() ÷ SharedDict", "get", MANAGER, SHM, ">=", 40.0),
    ("set: Manager().dict() ÷ SharedDict", "set", MANAGER, SHM, ">=", 40.0),
    ("incr: SharedDict ÷ ngx.shared.DICT", "incr", SHM, NGINX, "<=", 40.0),
    ("get: redis-py ÷ SharedDict", "get", REDIS, SHM, ">=", None),
    ("get: SharedDict ÷ ngx.shared.DICT", "get", SHM, NGINX, "<=", None),
    ("set: SharedDict ÷ ngx.shared.DICT", "set", SHM, NGINX, "<=", None),
)


log = logger("shm_bench")


def per_op(
    fn: Callable[[int], object], n: int, repeat: int, setup: Callable[[], object] | None = None
) -> float:
    """Median of ``repeat`` timed runs of ``fn(n)``, in µs per op (``setup()`` before each run,
    untimed)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / n * 1e6


# ---------------------------------------------------------------------------------------------
# SharedDict


def bench_shm(d: SharedDict, other: SharedDict, n: int, repeat: int) -> dict[str, float]:
    """µs/op of SharedDict's operations on ``d`` (``other``: a second zone for the baseline of
    two processes on separate zones)."""
    d.flush_all()
    d.set("k", 1)
    d.set("s", "hello")
    get, set_, incr, add = d.get, d.set, d.incr, d.add

    def g(n: int) -> None:
        for _ in range(n):
            get("k")

    def s(n: int) -> None:
        for _ in range(n):
            set_("s", "world")

    def i(n: int) -> None:
        for _ in range(n):
            incr("k", 1)

    n_add = min(n, 100_000)
    keys = [f"key{j}" for j in range(n_add)]

    def a(n: int) -> None:
        for k in keys[:n]:
            add(k, 1)

    lpush, lpop = d.lpush, d.lpop

    def lp(n: int) -> None:
        for _ in range(n):
            lpush("L", "x")
            lpop("L")

    r = {
        "get": per_op(g, n, repeat),
        "set": per_op(s, n, repeat),
        "incr": per_op(i, n, repeat),
        "add": per_op(a, n_add, repeat, setup=d.flush_all),
    }
    d.flush_all()
    d.rpush("L", "x")
    r["lpush_lpop"] = per_op(lp, n // 2, repeat)
    r["incr_2proc"] = two_procs([d, d], n, repeat)
    r["incr_2proc_sep"] = two_procs([d, other], n, repeat)
    return r


def two_procs(dicts: list[SharedDict], n: int, repeat: int) -> float:
    """Two forked processes each incr "hot" n times in ``dicts[i]``; aggregate µs per op
    (wall / 2n), the median of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        for d in dicts:
            d.set("hot", 0)
        go = multiprocessing.Event()
        pids = []
        for i in range(2):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    go.wait()
                    incr = dicts[i].incr
                    for _ in range(n):
                        incr("hot", 1)
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        time.sleep(0.2)
        t0 = time.perf_counter()
        go.set()
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            if status != 0:
                raise HarnessError(f"an incr process exited with wait status {status}")
        times.append(time.perf_counter() - t0)
        total = sum(d.get("hot") for d in {id(x): x for x in dicts}.values())
        if total != 2 * n:
            raise HarnessError(f"two processes counted {total} increments, expected {2 * n}")
    return statistics.median(times) / (2 * n) * 1e6


# ---------------------------------------------------------------------------------------------
# redis-py, Manager().dict(), ngx.shared.DICT


def start_redis(reg: ProcessRegistry, tmp: Path):  # -> redis.Redis
    exe = shutil.which("redis-server")
    if not exe:
        raise HarnessError("redis-server not found (Debian: apt-get install redis-server)")
    try:
        import redis
    except ImportError as exc:
        raise HarnessError("redis-py not installed (pip install -e '.[test]')") from exc
    port = free_port()
    (tmp / "redis").mkdir()
    argv = [exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    server = reg.start(
        "redis-server",
        [*argv, "--dir", str(tmp / "redis")],
        cwd=tmp,
        log_path=tmp / "redis.log",
        stop_signal=signal.SIGTERM,
    )
    try:
        wait_for_port(HOST, port, 10.0, server.proc)
        client = redis.Redis(host=HOST, port=port)
        client.ping()
    except (OSError, RuntimeError, redis.RedisError) as exc:
        raise HarnessError(f"redis-server did not serve: {exc}\n{server.output_tail()}") from exc
    return client


def bench_redis(client, n: int, repeat: int) -> dict[str, float]:  # client: redis.Redis
    client.set("k", 1)

    def incr(n: int) -> None:
        for _ in range(n):
            client.incr("k")

    def get(n: int) -> None:
        for _ in range(n):
            client.get("k")

    return {"get": per_op(get, n, repeat), "incr": per_op(incr, n, repeat)}


def bench_manager(md, n: int, repeat: int) -> dict[str, float]:  # md: a DictProxy
    md["k"] = 1

    def get(n: int) -> None:
        for _ in range(n):
            md["k"]

    def set_(n: int) -> None:
        for _ in range(n):
            md["s"] = "world"

    return {"get": per_op(get, n, repeat), "set": per_op(set_, n, repeat)}


def start_nginx(reg: ProcessRegistry, tmp: Path) -> str:
    """nginx with the lua shared-dict loop of bench/nginx_shdict; its /bench URL."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    lua = Path(NGINX_MODULES) / "ngx_http_lua_module.so"
    if not (os.path.exists(exe) and lua.exists()):
        raise HarnessError(
            f"nginx or {lua} not found (Debian: apt-get install nginx-light "
            "libnginx-mod-http-lua lua-resty-core)"
        )
    prefix = tmp / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    conf = (HERE / "nginx_shdict" / "nginx.conf.in").read_text()
    conf = conf.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port))
    (prefix / "nginx.conf").write_text(conf)
    server = reg.start(
        "nginx",
        [exe, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        cwd=prefix,
        log_path=prefix / "output.log",
    )
    try:
        wait_for_port(HOST, port, 10.0, server.proc)
    except (TimeoutError, RuntimeError) as exc:
        raise HarnessError(f"nginx did not start: {exc}\n{server.output_tail()}") from exc
    return f"http://{HOST}:{port}/bench"


def bench_nginx(url: str, n: int, repeat: int) -> dict[str, float]:
    """The median of ``repeat`` requests, each timing every operation ``n`` times in lua."""
    runs = []
    for _ in range(repeat):
        try:
            with urllib.request.urlopen(f"{url}?n={n}", timeout=120) as resp:
                runs.append(json.loads(resp.read()))
        except (OSError, ValueError) as exc:
            raise HarnessError(f"nginx {url} did not answer its figures: {exc}") from exc
    return {op: statistics.median(r[op] for r in runs) for op in OPS[NGINX]}


# ---------------------------------------------------------------------------------------------
# rounds


def our_pids() -> list[int]:
    """This process and its descendants (the servers it started and their workers)."""
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += child_pids(pid)
    return out


def run(args: argparse.Namespace, reg: ProcessRegistry, top: Path) -> dict[str, dict]:
    """Start the contenders, then ``--rounds`` rounds of each once, every other round reversed.

    Returns, per contender, ``rounds`` (one ``{op: µs}`` per round) and ``other_cpu`` (the
    other processes' CPU % during each round's measurement); ``skipped`` says why a contender
    did not run."""
    res: dict[str, dict] = {c: {"rounds": [], "other_cpu": [], "skipped": ""} for c in CONTENDERS}
    redis_client = nginx_url = None
    if args.no_redis:
        res[REDIS]["skipped"] = "skipped by --no-redis"
    else:
        redis_client = start_redis(reg, top)
    if args.no_nginx:
        res[NGINX]["skipped"] = "skipped by --no-nginx"
    else:
        nginx_url = start_nginx(reg, top)
    name = f"bench-{os.getpid()}"
    SharedDict.remove(name)
    SharedDict.remove(name + "-2")
    d = SharedDict.create(name, "64m")
    other = SharedDict.create(name + "-2", "1m")
    try:
        with multiprocessing.Manager() as manager:
            md = manager.dict()
            measure = {
                SHM: lambda: bench_shm(d, other, args.n, args.repeat),
                REDIS: lambda: bench_redis(redis_client, args.n_slow, args.repeat),
                MANAGER: lambda: bench_manager(md, args.n_slow, args.repeat),
                NGINX: lambda: bench_nginx(nginx_url, args.n_nginx, args.repeat),
            }
            for rnd in range(args.rounds):
                order = CONTENDERS if rnd % 2 == 0 else CONTENDERS[::-1]
                log(f"round {rnd + 1} of {args.rounds}")
                for c in order:
                    if res[c]["skipped"]:
                        continue
                    log(f"  {c}")
                    pids = our_pids()
                    meter = CpuMeter()
                    meter.start(pids)
                    res[c]["rounds"].append(measure[c]())
                    res[c]["other_cpu"].append(meter.stop(pids))
    finally:
        for z in (d, other):
            z.close()
            SharedDict.remove(z.name)
    return res


# ---------------------------------------------------------------------------------------------
# report


def _disturbed(res: dict[str, dict], contenders: tuple[str, ...]) -> list[bool]:
    n = max(len(res[c]["other_cpu"]) for c in contenders)
    return disturbed_rounds(
        [[p for c in contenders for p in res[c]["other_cpu"][i : i + 1]] for i in range(n)]
    )


def _values(res: dict[str, dict], contender: str, op: str) -> list[float | None]:
    return [r.get(op) for r in res[contender]["rounds"]]


def goals(res: dict[str, dict]) -> list[Goal]:
    out = [
        Goal(
            name,
            cmp,
            target,
            per_round_ratio(_values(res, num, op), _values(res, den, op)),
            _disturbed(res, (num, den)),
        )
        for name, op, num, den, cmp, target in GOALS
    ]
    one, two, sep = (_values(res, SHM, op) for op in ("incr", "incr_2proc", "incr_2proc_sep"))
    out.append(
        Goal(
            "incr: 2 processes on one key, throughput ÷ 1 process",
            ">=",
            1.0,
            per_round_ratio(one, two),
            _disturbed(res, (SHM,)),
            note="1-process incr µs ÷ the 2-process aggregate µs/op",
        )
    )
    out.append(
        Goal(
            "incr: 2 processes on one key, throughput ÷ on separate zones",
            ">=",
            None,
            per_round_ratio(sep, two),
            _disturbed(res, (SHM,)),
            note="for context: what sharing the zone lock costs",
        )
    )
    return out


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def tables(res: dict[str, dict], args: argparse.Namespace) -> list[Table]:
    rows = []
    for op in ROW_OPS:
        for c in CONTENDERS:
            if op not in OPS[c]:
                continue
            if res[c]["skipped"]:
                rows.append([op, c, res[c]["skipped"], "-"])
                continue
            flags = _disturbed(res, (c,))
            vals = _values(res, c, op)
            kept = [v for v, f in zip(vals, flags, strict=True) if v is not None and not f]
            rows.append(
                [
                    op,
                    c,
                    " ".join(_us(v) + ("*" if f else "") for v, f in zip(vals, flags, strict=True)),
                    _us(statistics.median(kept)) if kept else "-",
                ]
            )
    figures = Table(
        f"µs per operation, each round (the median of {args.repeat} timed loops) and the median "
        "of the kept rounds",
        ["op", "contender", "each round", "median"],
        rows,
        notes=[
            f"loops of {args.n:,} ops for SharedDict (add: {min(args.n, 100_000):,} new keys into "
            f"an emptied zone; lpush_lpop: {args.n // 2:,} push + pop pairs), {args.n_slow:,} for "
            f"redis-py and Manager().dict(), {args.n_nginx:,} for ngx.shared.DICT (add: 100,000), "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs",
            "SharedDict: in this process; redis-py: to a local redis-server over TCP; "
            "Manager().dict(): a proxy to the manager process; ngx.shared.DICT: timed inside one "
            "content_by_lua loop (LuaJIT, ngx.now() to the millisecond), one nginx worker",
            "incr_2proc: 2 processes incr one key, wall time ÷ all their ops; incr_2proc_sep: "
            "the same on two separate zones (no shared lock)",
            f"a figure marked * ran beside other load (other processes > {DISTURBED_PCT:g} % of "
            "the machine): left out of the median",
        ],
        right=(3,),
    )
    cpu_rows = []
    for c in CONTENDERS:
        if res[c]["skipped"]:
            continue
        cpu_rows.append(
            [c, " ".join("-" if p is None else f"{p:.0f}" for p in res[c]["other_cpu"])]
        )
    cpu = Table(
        "Other processes' CPU % of the machine during each round's measurement",
        ["contender", "each round"],
        cpu_rows,
        notes=["the bench, its servers and their workers are not counted"],
    )
    return [figures, cpu]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="SharedDict ops per loop (100000)")
    p.add_argument(
        "--n-slow",
        type=int,
        default=5_000,
        help="redis-py and Manager().dict() ops per loop (5000)",
    )
    p.add_argument(
        "--n-nginx", type=int, default=1_000_000, help="ngx.shared.DICT ops per loop (1000000)"
    )
    p.add_argument("--repeat", type=int, default=5, help="timed loops per figure, median (5)")
    p.add_argument("--quick", action="store_true", help="a tenth of every --n (a smoke run)")
    add_common_args(p)
    p.add_argument("--no-redis", action="store_true", help="leave redis-py out")
    p.add_argument("--no-nginx", action="store_true", help="leave ngx.shared.DICT out")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.n_slow, args.n_nginx = args.n // 10, args.n_slow // 10, args.n_nginx // 10
    if not (100 <= args.n <= 10_000_000 and 100 <= args.n_slow <= 1_000_000):
        p.error("bounded load: --n 100..10000000, --n-slow 100..1000000")
    if not (1_000 <= args.n_nginx <= 100_000_000):
        p.error("bounded load: --n-nginx 1000..100000000")
    if not (1 <= args.repeat <= 50 and 1 <= args.rounds <= 20):
        p.error("--repeat 1..50, --rounds 1..20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    res, status = run_harness("shm_bench", lambda reg, top: run(args, reg, top))
    if res is None:
        return status
    return finish(
        "shm",
        args,
        goals(res),
        tables(res, args),
        started,
        extra={
            "settings": {k: getattr(args, k) for k in ("n", "n_slow", "n_nginx", "repeat")},
            "contenders": res,
            "redis": tool_version(["redis-server", "--version"]),
            "nginx": tool_version(["nginx", "-v"]),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
