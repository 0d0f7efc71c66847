"""``edgeworker`` command line: run, check, reload, stop, reopen, shm, init.

Exit codes: 0 success; 1 invalid configuration or a failed action (the message names the
config file); 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib import resources

from . import starter

DEFAULT_CONFIG = "default/edgeworker.toml"


def default_config_path() -> str:
    """The bundled default config (welcome page, ``/hello``, ``/status`` on 127.0.0.1:8080)."""
    return str(resources.files("edgeworker").joinpath(DEFAULT_CONFIG))


def _config_path(args: argparse.Namespace) -> str:
    return os.path.abspath(args.config) if args.config else default_config_path()


def _fail(msg: str) -> int:
    print(f"edgeworker: {msg}", file=sys.stderr)
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
    from .master import EdgeApplication

    path = _config_path(args)
    try:
        app = EdgeApplication(path, workers=args.workers, listen=args.listen)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    app.run()
    return 0


def _master_pid(path: str) -> tuple[int | None, str]:
    """The master's pid from the config's pid file, or (None, reason)."""
    from . import config as config_mod
    from .errors import ConfigError

    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        return None, str(exc)
    pid_file = cfg.main.pid_file or config_mod.default_pid_file()
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
    except FileNotFoundError:
        return None, f"{path}: pid file {pid_file} not found: is edgeworker running?"
    except (OSError, ValueError) as exc:
        return None, f"{path}: cannot read pid file {pid_file}: {exc}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None, f"{path}: no process {pid} (stale pid file {pid_file})"
    except PermissionError:
        pass
    return pid, ""


def _signal(args: argparse.Namespace, sig: int) -> int:
    path = _config_path(args)
    pid, why = _master_pid(path)
    if pid is None:
        return _fail(why)
    try:
        os.kill(pid, sig)
    except OSError as exc:
        return _fail(f"{path}: cannot signal master {pid}: {exc}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    if not _checked(_config_path(args), "; nothing reloaded"):
        return 1
    return _signal(args, signal.SIGHUP)


def cmd_stop(args: argparse.Namespace) -> int:
    return _signal(args, signal.SIGQUIT if args.now else signal.SIGTERM)


def cmd_reopen(args: argparse.Namespace) -> int:
    return _signal(args, signal.SIGUSR1)


def cmd_shm(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from .errors import ConfigError
    from .zones import attach_zone

    path = _config_path(args)
    pid, why = _master_pid(path)
    if pid is None:
        return _fail(why)
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        return _fail(str(exc))
    if not cfg.shared_dict:
        print("no shared dicts configured")
        return 0
    rows = []
    for name in cfg.shared_dict:
        try:
            zone = attach_zone(name, pid)
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
        print("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeworker", description="A programmable edge server for Python.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("-c", "--config", metavar="FILE", help="config file (default: the bundled one)")
        sp.set_defaults(func=fn)
        return sp

    run = add("run", cmd_run, "start the master and workers in the foreground")
    run.add_argument("--workers", type=int, metavar="N", help="number of workers (overrides [main] workers)")
    run.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="listen on ADDR instead of every server's listen list (repeatable)",
    )
    add("check", cmd_check, "test the configuration and import every handler, like nginx -t")
    add("reload", cmd_reload, "validate the configuration, then reload the running server (SIGHUP)")
    stop = add("stop", cmd_stop, "stop the running server gracefully (SIGTERM)")
    stop.add_argument("--now", action="store_true", help="fast stop (SIGQUIT): do not wait for requests")
    add("reopen", cmd_reopen, "reopen log files (SIGUSR1), for logrotate")
    add("shm", cmd_shm, "print the shared dicts of the running server")
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
