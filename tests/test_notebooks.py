"""The course notebooks: conventions (static checks) and a papermill smoke run of each.

The smoke run executes every notebook with ``SMOKE_PARAMETERS`` and asserts the metrics its last
cell recorded: finite, decreasing loss; trainable parameters equal to the closed form; memory
categories summing to the peak; a verdict for every claim of the benchmark notebook.
"""
from __future__ import annotations

import json
import math
import re

import pytest

from peftbook.claims import CLAIMS
from peftbook.notebook_checks import reader_problems
from peftbook.notebooks import NOTEBOOK_DIR, NOTEBOOKS, available_notebooks, run_notebooks

PRESENT = available_notebooks()


def _cells(name):
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())["cells"]


def _source(cell) -> str:
    return "".join(cell["source"])


def test_every_course_notebook_exists():
    missing = [name for name in NOTEBOOKS if name not in PRESENT]
    assert not missing, f"notebooks not written yet: {missing}"


@pytest.mark.unit
@pytest.mark.parametrize("name", PRESENT)
def test_conventions(name):
    cells = _cells(name)
    code = [c for c in cells if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    for line in _source(tagged[0]).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.match(r"^[A-Z][A-Z0-9_]* = .+#", line), f"parameter line needs UPPER_CASE = value  # allowed: {line!r}"
            assert "=" not in line.split("#", 1)[1], f"papermill cannot parse '=' or '>=' in a parameter comment: {line!r}"
    assert "MODEL" in _source(tagged[0]) or name == "00_memory"
    assert "OUTPUT_DIR" in _source(tagged[0])
    assert "print_environment" in _source(code[0]), "the first code cell prints versions and device"
    assert "record_metrics" in _source(code[-1]), "the last code cell records the metrics"
    executed = [c.get("execution_count") is not None for c in code if _source(c).strip()]
    assert all(executed), "committed executed: every code cell has run (make render)"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "committed with its figures visible"
    assert not any(o.get("output_type") == "error" for o in outputs), "committed without errors"


DRAWS = re.compile(r"\bplot_\w+\(|\bplt\.|\.plot\(|\.imshow\(|\.bar\(")


@pytest.mark.unit
@pytest.mark.parametrize("name", PRESENT)
def test_every_cell_that_draws_shows_its_figure(name):
    """A code cell that calls a plotting function has a PNG among its committed outputs."""
    blind = []
    for index, cell in enumerate(_cells(name)):
        if cell["cell_type"] != "code":
            continue
        code = "\n".join(line for line in _source(cell).splitlines()
                         if not line.lstrip().startswith(("from ", "import ", "#", "def ")))
        if DRAWS.search(code) and not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            blind.append(index)
    assert blind == [], f"cells {blind} draw a figure but show no image"


@pytest.mark.unit
def test_benchmark_notebook_takes_its_verdicts_from_peftbook_claims():
    code = "\n".join(_source(c) for c in _cells("07_benchmark") if c["cell_type"] == "code")
    assert "from peftbook.claims import" in code and "check_all(" in code
    assert not re.search(r"^def (claim_\d+|compare|noise|score)\b", code, re.M), "claim logic belongs in peftbook.claims"


def _finite_numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _finite_numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _finite_numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def check_metrics(name: str, metrics: dict) -> None:
    """Assertions shared by the smoke run and the committed full run."""
    assert metrics, f"{name} recorded no metrics"
    assert all(math.isfinite(v) for v in _finite_numbers(metrics)), f"{name}: a metric is not finite"
    if "losses" in metrics:
        losses = metrics["losses"]
        assert len(losses) >= 2 and losses[-1] < losses[0], f"{name}: loss did not decrease: {losses}"
    if "trainable_params" in metrics:
        assert metrics["trainable_params"] == metrics["trainable_params_closed_form"]
    if "memory" in metrics:
        memory = metrics["memory"]
        assert sum(memory["by_category"].values()) == pytest.approx(memory["peak_bytes"], rel=1e-6)
    if "claims" in metrics:
        assert [c["id"] for c in metrics["claims"]] == sorted(CLAIMS)
        assert all(set(c) == {"id", "claim", "verdict", "evidence"} and c["verdict"] for c in metrics["claims"])
    if metrics.get("real") and not metrics["real"].get("skipped"):
        check_real_part(name, metrics["real"])
    if "headline" in metrics:
        headline = metrics["headline"]
        assert {"task", "metric", "budget", "rows"} <= set(headline)
        for row in headline["rows"]:
            assert {"method", "k", "mean", "sd", "n_seeds", "trainable_params"} <= set(row)
            assert 0 <= row["mean"] <= 1 and row["sd"] >= 0 and row["n_seeds"] >= 1


def check_real_part(name: str, real: dict) -> None:
    """A real-model part (``peftbook.realmodel``): one test score per seed for every setting, intervals
    that are those of the scores, and every recorded verdict the one its values give."""
    from peftbook import realmodel, stats

    assert {"model", "task", "seeds", "settings", "comparisons", "baselines"} <= set(real), f"{name}: real part fields"
    for setting in real["settings"]:
        assert len(setting["test"]) == len(setting["seeds"]) >= 1, f"{name}: {setting['label']}: one score per seed"
        assert all(0 <= v <= 1 for v in setting["test"] if setting.get("metric", "accuracy") == "accuracy")
        assert setting["interval"]["mean"] == pytest.approx(stats.t_interval(setting["test"]).mean)
    for row in real["comparisons"]:
        assert row["verdict"] == realmodel.versus(row["a_values"], row["b_values"]).verdict, f"{name}: {row}"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", PRESENT)
def test_smoke_run(name, tmp_path):
    summary = run_notebooks([name], out_dir=tmp_path, smoke=True, progress=False)
    check_metrics(name, summary[name]["metrics"])
    # what a reader of this run's notebook sees: no stderr, unfinished bars, reprs (the folder given is shown as given)
    executed = json.loads((tmp_path / f"{name}.ipynb").read_text())
    assert reader_problems(executed, allowed_paths=(str(tmp_path.resolve()), str(tmp_path))) == []


@pytest.mark.notebooks
@pytest.mark.skipif(not PRESENT, reason="no notebooks yet")
def test_bad_parameter_stops_in_checking_cell(tmp_path):
    from peftbook.errors import ConfigError

    name = next((n for n in PRESENT if n not in ("00_memory", "A_tiny_world")), PRESENT[0])
    with pytest.raises(ConfigError, match=r"stopped in cell 4: ConfigError: parameter MODEL='\./no/such/model'"):
        run_notebooks([name], out_dir=tmp_path, smoke=True, parameters={"MODEL": "./no/such/model"},
                      progress=False)


@pytest.fixture(scope="module")
def other_architecture(tmp_path_factory):
    """A random-init gpt2 (no RoPE, fused Conv1D attention) saved with the tiny base's tokenizer."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    from peftbook.models import TINY_DIR

    directory = tmp_path_factory.mktemp("gpt2-random")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=2048, n_embd=64, n_layer=4, n_head=4, n_positions=1024,
                        bos_token_id=0, eos_token_id=0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_DIR / name, directory / name)
    return directory


@pytest.mark.notebooks
@pytest.mark.parametrize("name", PRESENT)
def test_model_parameter_is_real(name, tmp_path, other_architecture):
    """MODEL=<a saved model of another architecture> runs every notebook (smoke) without error."""
    summary = run_notebooks([name], out_dir=tmp_path, smoke=True, progress=False,
                            parameters={"MODEL": str(other_architecture)})
    metrics = summary[name]["metrics"]
    assert metrics and metrics.get("model", str(other_architecture)) == str(other_architecture)
