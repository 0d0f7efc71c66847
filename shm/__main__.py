"""Command line: ``python -m shm stats NAME`` / ``verify NAME`` / ``remove NAME``."""

from __future__ import annotations

import argparse
import sys

from .dict import SharedDict


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (1 if the zone is absent or damaged)."""
    ap = argparse.ArgumentParser(prog="python -m shm", description="Inspect shm shared dicts.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in (
        ("stats", "print capacity, used, free, entries, evictions, hits, misses"),
        ("verify", "check the structure of a live zone"),
        ("remove", "unlink a zone (processes that map it keep it)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("name")
    args = ap.parse_args(argv)
    if args.cmd == "remove":
        if not SharedDict.exists(args.name):
            print(f"shm: no shared dict named {args.name!r}", file=sys.stderr)
            return 1
        SharedDict.remove(args.name)
        return 0
    try:
        d = SharedDict.attach(args.name)
    except FileNotFoundError:
        print(f"shm: no shared dict named {args.name!r}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"shm: {args.name!r}: {e}", file=sys.stderr)
        return 1
    with d:
        if args.cmd == "stats":
            for k, v in d.stats().items():
                print(f"{k:<10} {v}")
            return 0
        problems = d.verify()
        for p in problems:
            print(p)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
