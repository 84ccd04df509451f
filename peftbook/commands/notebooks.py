"""``python -m peftbook notebooks``: execute the course notebooks with papermill."""
from __future__ import annotations

import json
import sys

from peftbook.errors import strict_json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("notebooks", help="execute the course notebooks with papermill")
    parser.add_argument("--smoke", action="store_true", help="quick parameters (what the tests run)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (e.g. 05_lora)")
    parser.add_argument("--out", default="outputs/notebooks", help="folder for executed copies and metrics")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a notebook parameter (VALUE is parsed as JSON when it can be)")
    parser.add_argument("--render", action="store_true",
                        help="write executed notebooks back into notebooks/ (the committed outputs)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(args) -> int:
    from peftbook.notebooks import available_notebooks, run_notebooks

    if not available_notebooks():
        raise FileNotFoundError("no notebooks found in notebooks/")
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    for name in parameters:
        if not name.isupper():
            raise ValueError(f"notebook parameter {name!r} must be an UPPER_CASE name")
    summary = run_notebooks(args.only, out_dir=args.out, smoke=args.smoke, parameters=parameters,
                            render=args.render, progress=not args.json)
    if args.json:
        print(strict_json(summary, indent=2, default=str))
    else:
        for name, entry in summary.items():
            print(f"{name:<20} {entry['seconds']:>8.1f} s   {entry['output']}")
        print(f"results written to {args.out}", file=sys.stderr)
    return 0
