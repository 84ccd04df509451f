"""Run the course notebooks with papermill, and the small helpers every notebook calls.

The course is the list ``NOTEBOOKS``. Each notebook has exactly one cell tagged ``parameters``
(flat UPPER_CASE names); ``SMOKE_PARAMETERS`` are the values tests inject for a quick run. The last
cell of every notebook calls ``record_metrics``, which writes ``OUTPUT_DIR/<notebook>.json``: the
runner and the tests read those files.
"""
from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import time
from pathlib import Path

from peftbook.environment import device_info, versions
from peftbook.errors import ConfigError
from peftbook.progress import ENV as PROGRESS_ENV

# What a notebook raises for a bad parameter: reported as one line naming the notebook, not a traceback.
USER_ERRORS = ("ValueError", "FileNotFoundError", "ConfigError", "DataError", "AdapterError", "OutputError")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = (
    "00_memory", "01_few_shot", "02_prompt_tuning", "03_prefix_tuning", "04_llama_adapter",
    "05_lora", "06_qlora", "07_benchmark", "A_tiny_world",
)
# Quick values for tests and `--smoke`: every notebook still runs every cell.
SMOKE_PARAMETERS: dict[str, dict] = {
    "00_memory": {"SIZES": ["1B"], "SEQ_LENS": [512]},
    "01_few_shot": {"SHOTS": [0, 2], "DRAWS": 2, "EVAL_EXAMPLES": 24, "COMPARE_EXAMPLES": 8},
    "02_prompt_tuning": {"STEPS": 4, "EVAL_EXAMPLES": 16, "REAL_STEPS": 2, "REAL_SEEDS": [0, 1], "REAL_EVAL_EXAMPLES": 8,
                         "REAL_INITS": ["vocab", "random"], "REAL_LENGTHS": [4], "TINY_GAP_STEPS": 4},
    "03_prefix_tuning": {"STEPS": 4, "EVAL_EXAMPLES": 16, "REAL_STEPS": 2, "REAL_SEEDS": [0, 1], "REAL_EVAL_EXAMPLES": 8,
                         "REAL_INITS": ["vocab"], "REAL_REPARAM": True, "REAL_GENERATION_EXAMPLES": 4},
    "04_llama_adapter": {"STEPS": 4, "EVAL_EXAMPLES": 16, "SWEEP": False, "REAL_STEPS": 2, "REAL_SEEDS": [0, 1],
                         "REAL_EVAL_EXAMPLES": 8, "REAL_ADAPTER_LAYERS": [28, 8]},
    "05_lora": {"STEPS": 4, "EVAL_EXAMPLES": 16, "LATENCY_ROUNDS": 2, "REAL_STEPS": 2, "REAL_SEEDS": [0, 1],
                "REAL_EVAL_EXAMPLES": 8, "REAL_RANKS": [1], "REAL_TARGETS": ["q_proj,v_proj"], "REAL_LATENCY_ROUNDS": 2},
    "06_qlora": {"STEPS": 4, "EVAL_EXAMPLES": 16, "REAL_STEPS": 2, "REAL_SEEDS": [0, 1], "REAL_EVAL_EXAMPLES": 8,
                 "REAL_PPL_SEQUENCES": 8, "REAL_PPL_TOKENS": 32},
    "07_benchmark": {"STEPS": 3, "EVAL_EXAMPLES": 16, "SEEDS": [0], "FEW_SHOT_DRAWS": 2, "CHOICE_EXAMPLES": 8,
                     "CURVE_EXAMPLES": [16], "ABLATION_EXAMPLES": 6},
    "A_tiny_world": {"SAMPLES": 3},
}


def available_notebooks() -> list[str]:
    """The course notebooks that exist on disk, in course order."""
    return [name for name in NOTEBOOKS if (NOTEBOOK_DIR / f"{name}.ipynb").exists()]


def notebook_parameters(name: str) -> list[str]:
    """The names the ``parameters`` cell of notebook ``name`` assigns."""
    cells = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    return [target.id for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)]


def check_parameter_names(names: list[str], parameters: dict) -> None:
    """Refuse a parameter that none of the notebooks ``names`` has (a typo would run with the defaults)."""
    known = {"OUTPUT_DIR"}.union(*(notebook_parameters(name) for name in names))
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {', '.join(unknown)} for {', '.join(names)}; "
                          f"known: {', '.join(sorted(known))}")


def run_notebooks(names=None, out_dir="outputs/notebooks", smoke: bool = False, parameters: dict | None = None,
                  render: bool = False, progress: bool = True) -> dict:
    """Execute notebooks with papermill; returns ``{name: {"seconds", "metrics", "output"}}``.

    Args:
        names: notebook names (default: all that exist); unknown names raise listing the known ones.
        out_dir: where executed copies and each notebook's metrics JSON go.
        smoke: inject ``SMOKE_PARAMETERS`` (quick run).
        parameters: extra parameters for every notebook (e.g. ``{"MODEL": path}``), after smoke ones.
        render: write the executed notebook back over ``notebooks/<name>.ipynb`` (committed outputs).
    """
    existing = available_notebooks()
    names = list(names) if names else existing
    unknown = [n for n in names if n not in existing]
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; available: {', '.join(existing)}")
    check_parameter_names(names, parameters or {})
    import papermill
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in names:
        params = dict(SMOKE_PARAMETERS.get(name, {})) if smoke else {}
        params.update(parameters or {})
        params["OUTPUT_DIR"] = portable_path(out_dir, NOTEBOOK_DIR)  # the kernel runs in NOTEBOOK_DIR
        source = NOTEBOOK_DIR / f"{name}.ipynb"
        target = source if render else out_dir / f"{name}.ipynb"
        start = time.perf_counter()
        # iopub_timeout: papermill fails a cell whose output is not drained 4 s after it finished; on a
        # busy machine (the kit's CI has 2 shared cores) a training cell's progress output took longer
        try:
            with kernel_environment({PROGRESS_ENV: os.environ.get(PROGRESS_ENV, "final")}):
                papermill.execute_notebook(str(source), str(target), parameters=params, cwd=str(NOTEBOOK_DIR),
                                           progress_bar=progress, kernel_name="python3", iopub_timeout=120)
        except papermill.PapermillExecutionError as error:
            if error.ename not in USER_ERRORS:
                raise
            raise ConfigError(f"notebook {name} stopped in cell {error.exec_count}: {error.ename}: {error.evalue} "
                              f"(executed copy: {target})") from None
        finally:
            if target.exists():
                tidy_executed(target)
        metrics_file = out_dir / f"{name}.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        summary[name] = {"seconds": round(time.perf_counter() - start, 1), "metrics": metrics,
                         "output": str(target)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


@contextlib.contextmanager
def kernel_environment(variables: dict):
    """Set environment variables for the kernels started inside the block (they inherit ours), then restore."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def portable_path(path, start) -> str:
    """``path`` relative to ``start`` when both lie in this checkout (what a committed notebook may show), else absolute."""
    path, root = Path(path).resolve(), NOTEBOOK_DIR.parent
    if path == root or root in path.parents:
        return os.path.relpath(path, Path(start).resolve())
    return str(path)


def tidy_executed(path) -> None:
    """An executed notebook as readers get it: no path of the machine that ran it in papermill's metadata, and
    the kernelspec JupyterLab would write on opening (``nbclean``), so opening it changes nothing."""
    import nbformat

    from peftbook.nbclean import normalize_for_jupyterlab

    notebook = nbformat.from_dict(normalize_for_jupyterlab(nbformat.read(str(path), as_version=4)))
    widget_outputs = any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
                         for cell in notebook.cells for output in cell.get("outputs", []))
    if not widget_outputs:  # state of widgets no output shows any more (a render with text progress)
        notebook.metadata.pop("widgets", None)
    meta = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = portable_path(meta[key], NOTEBOOK_DIR.parent)
    nbformat.write(notebook, str(path))


def write_summary(summary: dict, out_dir) -> Path:
    """``summary.md``: time per notebook, the benchmark table and the claims table (from 07's metrics)."""
    lines = ["# peftbook run", "", "| notebook | seconds | executed copy |", "|---|---:|---|"]
    lines += [f"| {name} | {entry['seconds']:.1f} | {entry['output']} |" for name, entry in summary.items()]
    bench = (summary.get("07_benchmark") or {}).get("metrics") or {}
    if bench.get("records"):
        lines += ["", "## Benchmark", "", "| method | seed | trainable | peak MB | step s | metric | value |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        for r in bench["records"]:
            step = r.get("step_time_s")
            lines.append(f"| {r.get('method')} | {r.get('seed')} | {r.get('trainable_params')} | "
                         f"{(r.get('peak_memory_bytes') or 0) / 1e6:.1f} | {'' if step is None else f'{step:.3f}'} | "
                         f"{r.get('metric')} | {r.get('value')} |")
    if bench.get("claims"):
        lines += ["", "## The article's claims, as measured in this run", "", "| # | claim | evidence | verdict |",
                  "|---:|---|---|---|"]
        lines += [f"| {i} | {c['claim']} | {c['evidence']} | **{c['verdict']}** |"
                  for i, c in enumerate(bench["claims"], 1)]
    path = Path(out_dir) / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- helpers called from inside the notebooks -------------------------------------------------

def print_environment(device: str = "auto") -> dict:
    """First cell of every notebook: versions and device, printed and returned."""
    found, device = versions(), device_info(device)
    gpu = device.pop("gpu", None)
    info = {**{k: found[k] for k in ("python", "torch", "transformers", "peftbook")}, **device,
            "bitsandbytes": found["bitsandbytes"], **({"gpu": gpu} if gpu else {})}
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    return info


def check_choice(name: str, value, allowed) -> None:
    """Stop the notebook in its checking cell when a parameter is outside its allowed values."""
    if value not in allowed:
        raise ConfigError(f"parameter {name}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")


def check_positive(name: str, value, minimum=1) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"parameter {name}={value!r} is not allowed; it must be a number >= {minimum}")


def check_model(name: str, value: str) -> None:
    """MODEL must be 'tiny', an existing saved model directory, or a hub id (online only)."""
    from peftbook.models import resolve_model_path

    try:
        resolve_model_path(value)
    except FileNotFoundError as error:
        raise ConfigError(f"parameter {name}={value!r} cannot be loaded: {error}") from None


def record_metrics(notebook: str, metrics: dict, output_dir) -> None:
    """Last cell of every notebook: write its metrics to ``output_dir/<notebook>.json`` and say where.

    Returns nothing, so the cell that ends with it shows the one line, not a path object."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if hasattr(value, "item"):
            return clean(value.item())
        return value

    path = Path(output_dir) / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(metrics), indent=2, sort_keys=True))
    print(f"metrics written to {path}")


# ---- how notebooks show values: text a reader reads, not reprs --------------------------------

def number_text(value, digits: int = 3) -> str:
    """``value`` for reading: ints with thousands separators; a float in [-1, 1] (a score, a share) to
    ``digits`` decimals, a larger one to ``digits`` significant digits, a tiny one in e-notation."""
    if not isinstance(value, float):
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    if not math.isfinite(value) or value == 0:
        return str(value)
    if abs(value) < 10 ** -digits:
        return f"{value:.{digits - 1}e}"
    if abs(value) <= 1:
        return f"{value:.{digits}f}"
    return f"{value:,.{max(digits - len(str(int(abs(value)))), 0)}f}"


def settings_text(settings: dict) -> str:
    """``{"rank": 8, "alpha": 16.0}`` as ``rank 8, alpha 16``; nested dicts as ``name (...)``."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, dict):
            parts.append(f"{key} ({settings_text(value) or 'defaults'})")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{key} {', '.join(map(str, value))}")
        else:  # a setting is shown as written (a learning rate 0.1, not 0.100)
            parts.append(f"{key} {value:g}" if isinstance(value, float) else f"{key} {number_text(value)}")
    return ", ".join(parts)


def bytes_text(num_bytes: float) -> str:
    """Bytes in binary units to 3 significant digits: ``12.5 MiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(num_bytes) >= scale:
            value = num_bytes / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{num_bytes:,.0f} B"


def categories_text(by_category: dict) -> str:
    """A memory split ``{"weights": bytes, ...}`` as one line: ``weights 12.5 MiB · gradients 0 B · ...``."""
    return " · ".join(f"{name} {bytes_text(value)}" for name, value in by_category.items())


def markdown_table(rows: list[dict], columns: list[str] | None = None, headers: dict | None = None):
    """``rows`` as a Markdown table (shown as a table in Jupyter and on GitHub); numbers via ``number_text``."""
    from IPython.display import Markdown

    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    headers = headers or {}
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
             "|" + "|".join("---:" if all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                           for r in rows if r.get(c) is not None) else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(number_text(row.get(c, "")) if row.get(c) is not None else "" for c in columns) + " |"
              for row in rows]
    return Markdown("\n".join(lines))
