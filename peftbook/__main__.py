"""The peftbook command line: ``python -m peftbook <command> ...``.

Each command lives in ``peftbook/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; a command prints a human table, or one JSON document with ``--json``.
"""
from __future__ import annotations

import argparse
import sys

from peftbook.commands import bench, fewshot, info, memory, notebooks, run, tiny, train
from peftbook.commands import eval as evaluate

COMMANDS = (info, run, tiny, fewshot, train, evaluate, memory, bench, notebooks)  # in the order of --help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m peftbook", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # bad input and missing files: one clear line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
