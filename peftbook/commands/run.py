"""``python -m peftbook run``: the main job behind ``make run``.

Runs the kit on the embedded default model and writes everything into one output folder: the
executed notebooks (when the notebooks command exists) or, until then, the commands that exist
(info, the memory table, few-shot, the benchmark), each as a JSON file, plus ``summary.json``.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run the whole kit on the tiny base into an output folder")
    parser.add_argument("--out", default="outputs/run", help="output folder (default: outputs/run)")
    parser.add_argument("--smoke", action="store_true", help="small parameters (minutes, for a quick check)")
    parser.set_defaults(handler=run)


def _available(command: str) -> bool:
    try:
        importlib.import_module(f"peftbook.commands.{command}")
        return True
    except ModuleNotFoundError:
        return False


def _steps(smoke: bool) -> list[tuple[str, list[str]]]:
    from peftbook.models import TINY_DIR

    if _available("notebooks"):
        return [("notebooks", ["notebooks", "--out", "{out}/notebooks"] + (["--smoke"] if smoke else []))]
    steps = [("info", ["info", "--json"])]
    if _available("memory"):
        steps.append(("memory_table", ["memory", "--table", "--json"]))
    if (TINY_DIR / "config.json").exists():
        if _available("fewshot"):
            draws = "2" if smoke else "5"
            steps.append(("fewshot", ["fewshot", "--model", "tiny", "--task", "sentiment", "--shots", "0", "1", "2",
                                      "4", "8", "--draws", draws, "--json"]))
        if _available("bench"):
            steps.append(("bench", ["bench", "--model", "tiny", "--task", "sentiment", "--methods", "all",
                                    "--out", "{out}/bench", "--json"] + (["--steps", "5"] if smoke else [])))
    return steps


def run(args) -> int:
    from peftbook.__main__ import main

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, argv in _steps(args.smoke):
        argv = [a.replace("{out}", str(out)) for a in argv]
        print(f"[peftbook run] {name}: python -m peftbook {' '.join(argv)}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main(argv)
        elapsed = time.perf_counter() - start
        text = buffer.getvalue()
        (out / f"{name}.json").write_text(text)
        summary[name] = {"exit_code": code, "seconds": round(elapsed, 1), "output": str(out / f"{name}.json")}
        if code != 0:
            print(f"[peftbook run] {name} failed with exit code {code}", file=sys.stderr)
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            return code
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"results written to {out.resolve()}")
    return 0
