"""Run the course notebooks with papermill, and the small helpers every notebook calls.

The course is the list ``NOTEBOOKS``. Each notebook has exactly one cell tagged ``parameters``
(flat UPPER_CASE names); ``SMOKE_PARAMETERS`` are the values tests inject for a quick run. The last
cell of every notebook calls ``record_metrics``, which writes ``OUTPUT_DIR/<notebook>.json``: the
runner and the tests read those files.
"""
from __future__ import annotations

import ast
import json
import math
import time
from pathlib import Path

from peftbook.environment import device_info, versions
from peftbook.errors import ConfigError

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
    "01_few_shot": {"SHOTS": [0, 2], "DRAWS": 2, "EVAL_EXAMPLES": 24},
    "02_prompt_tuning": {"STEPS": 4, "EVAL_EXAMPLES": 16, "SWEEP": False},
    "03_prefix_tuning": {"STEPS": 4, "EVAL_EXAMPLES": 16, "SWEEP": False},
    "04_llama_adapter": {"STEPS": 4, "EVAL_EXAMPLES": 16, "SWEEP": False},
    "05_lora": {"STEPS": 4, "EVAL_EXAMPLES": 16, "SWEEP": False, "LATENCY_ROUNDS": 2},
    "06_qlora": {"STEPS": 4, "EVAL_EXAMPLES": 16, "SWEEP": False},
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
        params["OUTPUT_DIR"] = str(out_dir.resolve())
        source = NOTEBOOK_DIR / f"{name}.ipynb"
        target = source if render else out_dir / f"{name}.ipynb"
        start = time.perf_counter()
        # iopub_timeout: papermill fails a cell whose output is not drained 4 s after it finished; on a
        # busy machine (the kit's CI has 2 shared cores) a training cell's progress output took longer
        try:
            papermill.execute_notebook(str(source), str(target), parameters=params, cwd=str(NOTEBOOK_DIR),
                                       progress_bar=progress, kernel_name="python3", iopub_timeout=120)
        except papermill.PapermillExecutionError as error:
            if error.ename not in USER_ERRORS:
                raise
            raise ConfigError(f"notebook {name} stopped in cell {error.exec_count}: {error.ename}: {error.evalue} "
                              f"(executed copy: {target})") from None
        metrics_file = out_dir / f"{name}.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        summary[name] = {"seconds": round(time.perf_counter() - start, 1), "metrics": metrics,
                         "output": str(target)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


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
        raise ValueError(f"parameter {name}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")


def check_positive(name: str, value, minimum=1) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"parameter {name}={value!r} is not allowed; it must be a number >= {minimum}")


def check_model(name: str, value: str) -> None:
    """MODEL must be 'tiny', an existing saved model directory, or a hub id (online only)."""
    from peftbook.models import resolve_model_path

    try:
        resolve_model_path(value)
    except FileNotFoundError as error:
        raise ValueError(f"parameter {name}={value!r} cannot be loaded: {error}") from None


def record_metrics(notebook: str, metrics: dict, output_dir) -> Path:
    """Last cell of every notebook: write its metrics to ``output_dir/<notebook>.json`` and show them."""
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
    return path
