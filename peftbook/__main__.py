"""The peftbook command line: ``python -m peftbook <command> ...``.

Each command lives in ``peftbook/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; a command prints a human table, or one JSON document with ``--json``.
A user error (``peftbook.errors``, a bad value, a missing file) prints ``error: <one line>`` and exits
2; ``--debug`` shows its traceback instead. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from peftbook.commands import bench, fetch, fewshot, info, memory, notebooks, plan, run, tiny, train
from peftbook.commands import eval as evaluate
from peftbook.errors import PeftbookError, one_line

COMMANDS = (info, run, tiny, fetch, fewshot, train, evaluate, memory, plan, bench, notebooks)  # in the order of --help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m peftbook", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
    except (PeftbookError, ValueError, OSError, RuntimeError) as error:
        # bad input, missing or refused files: one clear line, not a traceback
        if args.debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
