"""``python -m peftbook run``: the main job behind ``make run``.

Executes every course notebook with papermill on the embedded tiny base (``--smoke``: with the quick
parameters the tests use) into one output folder: the executed copies, each notebook's metrics
JSON, ``summary.json`` and ``summary.md`` (time per notebook, the benchmark table and the table of
the article's claims with the verdicts measured in this run).
"""
from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run the whole course on the tiny base into an output folder")
    parser.add_argument("--out", default="outputs/run", help="output folder (default: outputs/run)")
    parser.add_argument("--smoke", action="store_true", help="quick parameters (minutes, for a check)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from peftbook.notebooks import available_notebooks, run_notebooks, write_summary

    if not available_notebooks():
        raise FileNotFoundError("no notebooks found in notebooks/")
    out = Path(args.out)
    summary = run_notebooks(None, out_dir=out, smoke=args.smoke)
    path = write_summary(summary, out)
    print(path.read_text())
    print(f"results written to {out.resolve()} (executed notebooks, metrics, summary.md)")
    return 0
