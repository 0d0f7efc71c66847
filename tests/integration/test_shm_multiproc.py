"""Multi-process behaviour: atomic incr, add races, fork, attach from another interpreter,
batched scans that keep other processes' latency low."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ..shm_helpers import zones  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fork(fn, *args) -> int:
    """Run ``fn(*args)`` in a forked child; exit 0 on success, 1 on exception."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def join(pids, timeout=60.0) -> list[int]:
    """Wait for all pids (killing them after ``timeout``); their exit codes."""
    deadline = time.monotonic() + timeout
    codes = []
    for pid in pids:
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                codes.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                codes.append(-9)
                break
            time.sleep(0.01)
    return codes


def test_incr_exact_total_across_processes(zones):  # noqa: F811
    d = zones("1m")
    d.set("c", 0)
    n, procs = 5000, 4

    def work():
        for i in range(n):
            d.incr("c", 1)
            d.incr("f", 0.5, init=0)
            d.incr(f"k{i % 7}", 1, init=0)

    codes = join([fork(work) for _ in range(procs)])
    assert codes == [0] * procs
    assert d.get("c") == n * procs
    assert d.get("f") == n * procs * 0.5
    assert sum(d.get(f"k{j}") for j in range(7)) == n * procs
    assert d.verify() == []


def test_add_race_has_one_winner_per_key(zones):  # noqa: F811
    d = zones("1m")
    keys, procs = 2000, 4

    def work():
        won = 0
        for i in range(keys):
            if d.add(f"key{i}", os.getpid()):
                won += 1
        d.incr("wins", won, init=0)

    pids = [fork(work) for _ in range(procs)]
    assert join(pids) == [0] * procs
    assert d.get("wins") == keys
    owners = [d.get(f"key{i}") for i in range(keys)]
    assert set(owners) <= set(pids)
    assert d.verify() == []


def test_dict_works_after_fork_and_owner_is_child_pid(zones):  # noqa: F811
    d = zones("64k")
    d.set("from-parent", 1)
    r, w = os.pipe()

    def child():
        d._lock_()
        try:
            os.write(w, str(d.owner()).encode())
        finally:
            d._unlock()
        d.set("from-child", os.getpid())

    pid = fork(child)
    assert join([pid]) == [0]
    assert int(os.read(r, 64)) == pid
    os.close(r)
    os.close(w)
    assert d.get("from-child") == pid
    assert d.owner() == 0


def test_attach_from_other_interpreter(zones):  # noqa: F811
    d = zones("64k")
    d.set("k", "v", 0, 3)
    d.rpush("l", 1)
    code = (
        "import sys; from shm import SharedDict\n"
        f"d = SharedDict.attach({d.name!r})\n"
        "assert d.get_with_flags('k') == ('v', 3), d.get_with_flags('k')\n"
        "assert d.lpop('l') == 1\n"
        "d.set('other', b'x'); d.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    assert d.get("other") == b"x"
    assert d.llen("l") == 0


def test_cli_stats(zones):  # noqa: F811
    d = zones("1m")
    d.set("a", 1)
    d.set("b", 2, 0.05)
    d.get("a")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "shm", "stats", d.name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    fields = dict(line.split() for line in out.stdout.splitlines())
    assert fields["capacity"] == str(1024 * 1024)
    assert fields["entries"] == "2"
    assert {"used", "free", "evictions", "hits", "misses"} <= set(fields)
    out = subprocess.run(
        [sys.executable, "-m", "shm", "stats", "no-such-zone-xyz"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "no shared dict named 'no-such-zone-xyz'" in out.stderr


def test_scan_keeps_other_process_latency_low(zones):  # noqa: F811
    """While one process runs get_keys(0)/flush_expired over 100k keys, another's get p99 <1 ms."""
    d = zones("32m")
    for i in range(100_000):
        d.set(f"key:{i}", i, 0 if i % 10 else 0.001)
    time.sleep(0.01)
    stop_at = time.monotonic() + 30

    def scanner():
        while time.monotonic() < stop_at:
            assert len(d.get_keys(0)) >= 90_000
            d.flush_expired(100)

    def get_latencies() -> list[float]:
        lat = []
        for i in range(3000):
            t0 = time.perf_counter()
            d.get(f"key:{i * 7 % 100_000 + 1}")
            lat.append(time.perf_counter() - t0)
            if i % 10 == 0:
                time.sleep(0.0005)
        lat.sort()
        return lat

    # the machine's own noise floor (scheduling on a shared 2-core box), without any scan
    base = get_latencies()
    base_p99 = base[int(len(base) * 0.99)]
    pid = fork(scanner)
    try:
        time.sleep(0.3)  # the scanner is scanning
        lat = get_latencies()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        d.recover(pid)
    p99 = lat[int(len(lat) * 0.99)]
    print(
        f"get latency during scans: p50 {lat[len(lat) // 2] * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us"
        f" (without scans: p99 {base_p99 * 1e6:.0f} us)"
    )
    # scans add less than 1 ms to the p99 (above what the machine itself adds when loaded)
    assert p99 < 0.001 + base_p99, f"p99 get latency {p99 * 1e3:.3f} ms during a full scan"
    assert d.verify() == []


@pytest.mark.parametrize("procs", [2, 3])
def test_mixed_ops_many_processes_stay_sound(zones, procs):  # noqa: F811
    d = zones("64k")  # small: eviction and page churn under contention

    def work(seed):
        import random

        rnd = random.Random(seed)
        for _ in range(3000):
            k = f"k{rnd.randrange(100)}"
            op = rnd.random()
            if op < 0.3:
                d.set(k, "v" * rnd.randrange(1, 600))
            elif op < 0.45:
                d.incr("n" + k, 1, init=0)
            elif op < 0.6:
                try:
                    d.rpush("l" + k, rnd.randrange(1000))
                except Exception as e:  # NoMemory is acceptable for lists (never evict)
                    assert type(e).__name__ == "NoMemory"
            elif op < 0.7:
                d.lpop("l" + k)
            elif op < 0.8:
                d.delete(k)
            else:
                try:
                    d.get(k)
                except Exception as e:
                    assert type(e).__name__ == "IsAList"

    assert join([fork(work, s) for s in range(procs)]) == [0] * procs
    assert d.verify() == []
