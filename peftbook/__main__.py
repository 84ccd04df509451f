"""The peftbook command line: ``python -m peftbook <command> ...``.

Each command lives in ``peftbook/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; a command prints a human table, or one JSON document with ``--json``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("info", "run", "tiny", "fewshot", "train", "eval", "memory", "bench", "notebooks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m peftbook", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"peftbook.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"peftbook.commands.{name}":
                continue  # not built yet
            raise
        module.add_parser(subparsers)
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
