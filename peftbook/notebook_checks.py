"""What a reader of an executed notebook must not meet, checked on the notebook's JSON.

``reader_problems(notebook)`` lists, one line each: stderr outputs, absolute paths of the machine that
ran it, progress bars recorded in an unfinished state (or as widgets, whose saved text is their
starting "0%"), figures that show as a repr without an image, object reprs, and floats printed with
more than 6 decimals. The tests run it on every committed notebook and on each smoke run's output.
"""
from __future__ import annotations

import re

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TEXT_TYPES = ("text/plain", "text/markdown", "text/html")
# A path that starts at a filesystem root on Linux, macOS or Windows (after a quote, space, = or start).
ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(=:])(?:/(?:home|root|tmp|work|Users|var|mnt|opt|private|srv)/|[A-Z]:\\\\)")
PROGRESS = re.compile(r"(\d+)%\|[^|\n]*\|\s*(\d+)/(\d+)")  # tqdm's "NN%|bar| n/total"
FIGURE_REPR = re.compile(r"<(?:\w*Figure) size \d+x\d+ with \d+ Axes>")
OBJECT_REPR = re.compile(r"PosixPath\(|WindowsPath\(| object at 0x[0-9a-f]+>")
LONG_FLOAT = re.compile(r"(?<![\w.])\d+\.\d{7,}(?![\w.])")
ALLOW_STDERR_TAG = "shows-warning"  # a cell *about* a warning may keep its stderr output


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def output_texts(output: dict) -> list[str]:
    """The readable texts of one output: a stream's text, or each text mimetype of a display/result."""
    if output.get("output_type") == "stream":
        return [_text(output.get("text"))]
    data = output.get("data", {})
    return [_text(data[kind]) for kind in TEXT_TYPES if kind in data]


def reader_problems(notebook: dict, allowed_paths: tuple[str, ...] = ()) -> list[str]:
    """One line per problem a reader would see in ``notebook`` (a dict as ``json.load`` gives it).

    ``allowed_paths``: absolute paths a run was given on purpose (a test's temporary output folder):
    shown as given, so not a problem.
    """
    problems = []

    def absolute(text: str) -> bool:
        for path in allowed_paths:
            text = text.replace(path, "")
        return bool(ABSOLUTE_PATH.search(text))

    papermill = notebook.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if absolute(" " + str(papermill.get(key) or "")):
            problems.append(f"metadata papermill.{key} is an absolute path: {papermill[key]}")
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        where = f"cell {index} ({cell.get('id', '?')})"
        if absolute(_text(cell.get("source"))):
            problems.append(f"{where}: an absolute path in the source")
        outputs = cell.get("outputs", [])
        has_image = any("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {}) for o in outputs)
        tags = cell.get("metadata", {}).get("tags", [])
        for output in outputs:
            if output.get("output_type") == "stream" and output.get("name") == "stderr" and ALLOW_STDERR_TAG not in tags:
                problems.append(f"{where}: stderr output {_text(output.get('text'))[:80]!r}")
            if WIDGET_VIEW in output.get("data", {}):
                problems.append(f"{where}: a widget output (viewers without its state show its saved text, "
                                "a progress bar's starting state)")
                continue
            for text in output_texts(output):
                if absolute(text):
                    problems.append(f"{where}: an absolute path in the output {text[:80]!r}")
                if "\r" in text:
                    problems.append(f"{where}: carriage returns in the output (a live progress bar's frames)")
                for match in PROGRESS.finditer(text):
                    if match.group(2) != match.group(3) or match.group(1) != "100":
                        problems.append(f"{where}: a progress bar recorded unfinished: {match.group(0)!r}")
                if FIGURE_REPR.search(text) and not has_image:
                    problems.append(f"{where}: a figure shown as text ({FIGURE_REPR.search(text).group(0)}) with no image")
                if OBJECT_REPR.search(text):
                    problems.append(f"{where}: an object repr in the output {OBJECT_REPR.search(text).group(0)!r}")
                if LONG_FLOAT.search(text):
                    problems.append(f"{where}: an unrounded number {LONG_FLOAT.search(text).group(0)}")
    return problems
