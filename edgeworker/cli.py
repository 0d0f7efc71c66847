"""``edgeworker`` command line: run, check, reload, stop, reopen, shm, init.

Exit codes: 0 success; 1 invalid configuration or a failed action (one message on stderr:
the loader's errors with the config file, or why the action failed); 2 usage errors (argparse).

``reload``, ``stop``, ``reopen`` and ``shm`` act on a running master found through a pid file:
the one of ``-c FILE``, else the default one. They read the master's state file beside it
(``edgeworker.control``): the config the master runs, and the outcome of a reload or reopen,
which they wait for and report.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from importlib import resources

from . import __version__, control, starter

DEFAULT_CONFIG = "default/edgeworker.toml"

#: ``reload`` and ``reopen`` wait this long for the master's outcome by default: the master
#: gives the config check 60 s and the new workers 30 s to become ready
RELOAD_TIMEOUT = 100.0
REOPEN_TIMEOUT = 10.0
#: ``stop`` waits the config's ``graceful_timeout`` and this much more by default
STOP_MARGIN = 10.0


def default_config_path() -> str:
    """The bundled default config (welcome page, ``/hello``, ``/status`` on 127.0.0.1:8080)."""
    return str(resources.files("edgeworker").joinpath(DEFAULT_CONFIG))


def _config_path(args: argparse.Namespace) -> str:
    return os.path.abspath(args.config) if args.config else default_config_path()


def _fail(msg: str) -> int:
    print(msg, file=sys.stderr)
    return 1


def _checked(path: str, failed_suffix: str = "") -> bool:
    """Run ``check`` on ``path``; print each error (and the verdict) to stderr if it fails."""
    from .check import check

    warnings: list[str] = []
    _cfg, errors = check(path, warnings)
    for warning in warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    for err in errors:  # FILE:LINE: path: cause
        print(err, file=sys.stderr)
    if errors:
        print(f"configuration file {path} test failed{failed_suffix}", file=sys.stderr)
    return not errors


def cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args)
    if not _checked(path):
        return 1
    print(f"configuration file {path} test is successful")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .master import EdgeApplication, StartError

    path = _config_path(args)
    try:
        app = EdgeApplication(path, workers=args.workers, listen=args.listen)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        app.run()
    except StartError as exc:
        return _fail(str(exc))
    return 0


class Running:
    """The running master a command acts on, found through a pid file, with its state file
    (``edgeworker.control``; None for a master still starting)."""

    def __init__(self, pid: int, pid_file: str, state: dict | None) -> None:
        self.pid = pid
        self.pid_file = pid_file
        self.state = state


def _find_master(args: argparse.Namespace, need_state: bool = True) -> Running | str:
    """The master of ``-c FILE`` (through that config's ``pid_file``), or without ``-c`` the
    master of the default pid file, whatever config it runs; else why not (the message).

    A master that runs another file than ``FILE`` is refused: the command would check one file
    and act on a server that runs another."""
    from . import config as config_mod
    from .errors import ConfigError

    if args.config:
        path = os.path.abspath(args.config)
        try:
            cfg = config_mod.load(path)
        except ConfigError as exc:
            return str(exc)
        pid_file = cfg.main.pid_file or config_mod.default_pid_file()
        where = f" (pid_file of {path})"
    else:
        path = None
        pid_file = config_mod.default_pid_file()
        where = " (the default pid file; name the server's config with -c FILE)"
    text = ""
    try:
        with open(pid_file) as f:
            text = f.read().strip()
        pid = int(text)
    except FileNotFoundError:
        return f"no running master: {pid_file} not found{where}"
    except OSError as exc:
        return f"cannot read pid file {pid_file}: {exc.strerror}{where}"
    except ValueError:
        return f"pid file {pid_file} holds no pid: {text[:40]!r}{where}"
    if not control.process_alive(pid):
        return f"master {pid} is not running (stale pid file {pid_file}){where}"
    state_file = control.state_path(pid_file)
    try:
        state = control.read_state(state_file)
    except (OSError, ValueError) as exc:
        return f"master {pid}: cannot read its state: {exc}"
    if state is not None and state.get("pid") != pid:
        state = None  # left by an earlier master
    if state is None:
        if need_state:
            return (
                f"master {pid} has no state file {state_file}: it is still starting, "
                f"or is not an edgeworker {__version__} master"
            )
        return Running(pid, pid_file, None)
    if path is not None and not _same_file(path, state["config"]):
        return (
            f"{path} is not the config of the running master {pid}: it runs {state['config']} "
            f"(pid file {pid_file}); name that file with -c, or leave -c out"
        )
    return Running(pid, pid_file, state)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _send(master: Running, sig: int) -> str | None:
    try:
        os.kill(master.pid, sig)
    except OSError as exc:
        return f"cannot signal master {master.pid}: {exc.strerror}"
    return None


def _signal_and_wait(master: Running, sig: int, action: str, timeout: float) -> int:
    """Send ``sig``, then wait for the master's outcome of ``action`` begun after it
    (``edgeworker.control``) and print it: on stdout with exit 0 if it worked, else on
    stderr with exit 1."""
    before = master.state[action]["seq"]
    sent = time.monotonic()
    why = _send(master, sig)
    if why:
        return _fail(why)
    ok, message = control.await_outcome(master.pid, master.pid_file, action, before, sent, timeout)
    if not ok:
        return _fail(message)
    print(message)
    return 0


def _as_master(pid: int) -> None:
    """Take the environment and working directory of process ``pid`` (from /proc), so that a
    check here sees what the master's own check will see: ``${NAME}`` in the config, handler
    imports. Left as they are when /proc does not show them (another user's process)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return
    env = dict(item.partition(b"=")[::2] for item in raw.split(b"\0") if b"=" in item)
    os.environ.clear()
    os.environ.update({os.fsdecode(k): os.fsdecode(v) for k, v in env.items()})
    try:
        os.chdir(cwd)
    except OSError:
        pass


def cmd_reload(args: argparse.Namespace) -> int:
    master = _find_master(args)
    if isinstance(master, str):
        return _fail(master)
    _as_master(master.pid)
    if not _checked(master.state["config"], "; nothing reloaded"):
        return 1
    return _signal_and_wait(master, signal.SIGHUP, "reload", args.timeout)


def cmd_stop(args: argparse.Namespace) -> int:
    master = _find_master(args, need_state=False)
    if isinstance(master, str):
        return _fail(master)
    timeout = args.timeout
    if timeout is None:
        graceful = master.state["graceful_timeout"] if master.state else 30.0
        timeout = graceful + STOP_MARGIN
    why = _send(master, signal.SIGQUIT if args.now else signal.SIGTERM)
    if why:
        return _fail(why)
    deadline = time.monotonic() + timeout
    while control.process_alive(master.pid):
        if time.monotonic() >= deadline:
            return _fail(
                f"master {master.pid} still running after {timeout:g} s (see its error log)"
            )
        time.sleep(0.05)
    print(f"stopped: master {master.pid}")
    return 0


def cmd_reopen(args: argparse.Namespace) -> int:
    master = _find_master(args)
    if isinstance(master, str):
        return _fail(master)
    return _signal_and_wait(master, signal.SIGUSR1, "reopen", args.timeout)


def cmd_shm(args: argparse.Namespace) -> int:
    from .zones import attach_zone

    master = _find_master(args)
    if isinstance(master, str):
        return _fail(master)
    names = master.state["shared_dicts"]
    if not names:
        print(f"no shared dicts in master {master.pid}")
        return 0
    rows = []
    for name in names:
        try:
            zone = attach_zone(name, master.pid)
        except FileNotFoundError:
            rows.append((name, "-", "-", "-", "-", "-"))
            continue
        try:
            s = zone.stats()
        finally:
            zone.close()
        rows.append((name, s["capacity"], s["used"], s["free"], s["entries"], s["evictions"]))
    header = ("name", "capacity", "used", "free", "entries", "evictions")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in cells))
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeworker", description="A programmable edge server for Python."
    )
    p.add_argument("-V", "--version", action="version", version=f"edgeworker {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help_: str, config_help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("-c", "--config", metavar="FILE", help=config_help)
        sp.set_defaults(func=fn)
        return sp

    own = "config file (default: the bundled one)"
    running = "the running server's config file (default: the master of the default pid file)"
    run = add("run", cmd_run, "start the master and workers in the foreground", own)
    run.add_argument(
        "--workers", type=int, metavar="N", help="number of workers (overrides [main] workers)"
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="listen on ADDR instead of every server's listen list (repeatable)",
    )
    add("check", cmd_check, "test the configuration and import every handler, like nginx -t", own)
    reload = add(
        "reload",
        cmd_reload,
        "check the running server's configuration, reload it (SIGHUP) and report the outcome",
        running,
    )
    reload.add_argument(
        "--timeout",
        type=_seconds,
        default=RELOAD_TIMEOUT,
        metavar="SECONDS",
        help=f"wait this long for the outcome (default {RELOAD_TIMEOUT:g})",
    )
    stop = add(
        "stop",
        cmd_stop,
        "stop the running server gracefully (SIGTERM) and wait until it exits",
        running,
    )
    stop.add_argument(
        "--now", action="store_true", help="fast stop (SIGQUIT): do not wait for requests"
    )
    stop.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"wait this long for the master to exit (default: graceful_timeout + {STOP_MARGIN:g})",
    )
    reopen = add("reopen", cmd_reopen, "reopen log files (SIGUSR1), for logrotate", running)
    reopen.add_argument(
        "--timeout",
        type=_seconds,
        default=REOPEN_TIMEOUT,
        metavar="SECONDS",
        help=f"wait this long for the outcome (default {REOPEN_TIMEOUT:g})",
    )
    add("shm", cmd_shm, "print the shared dicts of the running server", running)
    starter.register(sub)  # edgeworker init DIR
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        print("edgeworker: --workers must be at least 1", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
