"""Command line: ``ebzip demo`` (the HDF5 commands come with the CLI issue)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ebzip", description="Error-bounded lossy compression of float arrays.")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="compress a simulated field at several bounds and report the results")
    demo.add_argument("--size", type=int, default=256, help="grid edge of the simulation (default 256)")
    demo.add_argument("--snapshots", type=int, default=32, help="snapshots stacked into a 3-D field (default 32)")
    demo.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    sub.add_parser("info", help="report the ebzip build: backends, versions, stream format")
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        from .demo import run_demo

        size = getattr(args, "size", 256)
        snapshots = getattr(args, "snapshots", 32)
        run_demo(size=size, snapshots=snapshots, threads=getattr(args, "threads", None))
        return 0
    if args.command == "info":
        from .info import report

        print(report())
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
