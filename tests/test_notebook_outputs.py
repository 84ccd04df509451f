"""The course as a reader sees it: the committed notebooks' outputs, their HTML, and the progress bars.

``peftbook.notebook_checks.reader_problems`` holds the rules (no stderr, no absolute paths, no
unfinished progress bars or widget bars, no figure without its image, no reprs, no unrounded
floats); here they run on every committed notebook, and each rule is shown to fire.
"""
from __future__ import annotations

import json
import re

import pytest

from peftbook.nbclean import jupyterlab_dirty_causes
from peftbook.notebook_checks import reader_problems
from peftbook.notebooks import NOTEBOOK_DIR, available_notebooks, portable_path
from peftbook.progress import progress_bar

PRESENT = available_notebooks()
pytestmark = pytest.mark.unit


def _notebook(name: str) -> dict:
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())


@pytest.mark.parametrize("name", PRESENT)
def test_committed_notebook_reads_clean(name):
    problems = reader_problems(_notebook(name))
    assert problems == [], f"{name}: {len(problems)} problem(s), e.g.\n" + "\n".join(problems[:10])


@pytest.mark.parametrize("name", PRESENT)
def test_committed_notebook_opens_unmodified_in_jupyterlab(name):
    # JupyterLab rewrites a kernelspec that differs from the running kernel's and marks the notebook
    # modified (found with scripts/check_jupyterlab.py in a real JupyterLab; the runner normalizes it)
    assert jupyterlab_dirty_causes(_notebook(name)) == []


@pytest.mark.parametrize("name", PRESENT)
def test_html_render_shows_finished_progress_and_every_image(name):
    from nbconvert import HTMLExporter

    notebook = _notebook(name)
    html, _ = HTMLExporter().from_filename(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    images = sum("image/png" in o.get("data", {}) for c in notebook["cells"] for o in c.get("outputs", []))
    assert images and html.count("<img") >= images, f"{name}: {images} images in the JSON, fewer in the HTML"
    bars = re.findall(r"(\d+)%\|", html)
    assert all(b == "100" for b in bars), f"{name}: progress bars in the HTML read {sorted(set(bars))}%"
    assert "widget-view+json" not in html


def _code_cell(*outputs, source="x = 1", tags=()):
    return {"cell_type": "code", "id": "t", "source": source, "metadata": {"tags": list(tags)}, "outputs": list(outputs)}


def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


@pytest.mark.parametrize("cell, found", [
    (_code_cell(_stream("warning!\n", "stderr")), "stderr output"),
    (_code_cell(source='OUTPUT_DIR = "/home/ann/out"'), "absolute path in the source"),
    (_code_cell(_stream("metrics written to /tmp/x/y.json\n")), "absolute path in the output"),
    (_code_cell(_stream("train:   0%|          | 0/600 [00:00<?, ?it/s]\n")), "unfinished"),
    (_code_cell(_stream("train:  50%|#####     | 300/600\n")), "unfinished"),
    (_code_cell(_stream("a\rb\n")), "carriage returns"),
    (_code_cell({"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {},
                                                          "text/plain": "train:   0%|"}, "metadata": {}}), "widget"),
    (_code_cell({"output_type": "execute_result", "data": {"text/plain": "<Figure size 700x400 with 1 Axes>"},
                 "metadata": {}, "execution_count": 1}), "figure shown as text"),
    (_code_cell({"output_type": "execute_result", "data": {"text/plain": "PosixPath('a/b')"}, "metadata": {},
                 "execution_count": 1}), "object repr"),
    (_code_cell(_stream("loss 0.00048372484161518514\n")), "unrounded number"),
])
def test_each_reader_rule_fires(cell, found):
    problems = reader_problems({"cells": [cell], "metadata": {}})
    assert len(problems) == 1 and found in problems[0], problems


def test_what_readers_should_see_passes():
    figure = {"output_type": "display_data", "metadata": {},
              "data": {"image/png": "iVBOR", "text/plain": "<ShownFigure size 700x400 with 1 Axes>"}}
    cell = _code_cell(_stream("train: 100%|██████████| 600/600 [01:02<00:00, 9.6it/s, loss=0.0123]\n"),
                      _stream("metrics written to ../outputs/notebooks/x.json\nversion 1.2.3, ratio 0.123457\n"),
                      figure, source='OUTPUT_DIR = "../outputs/notebooks"')
    warning = _code_cell(_stream("DeprecationWarning: ...\n", "stderr"), tags=["shows-warning"])
    notebook = {"cells": [cell, warning], "metadata": {"papermill": {"input_path": "notebooks/x.ipynb"}}}
    assert reader_problems(notebook) == []
    moved = {"cells": [_code_cell(_stream("metrics written to /tmp/run/x.json\n"))], "metadata": {}}
    assert reader_problems(moved, allowed_paths=("/tmp/run",)) == []


def test_portable_path_is_relative_inside_the_checkout():
    assert portable_path(NOTEBOOK_DIR.parent / "outputs" / "run", NOTEBOOK_DIR) == "../outputs/run"
    assert portable_path("/somewhere/else", NOTEBOOK_DIR) == "/somewhere/else"


def test_final_progress_prints_one_finished_line(monkeypatch, capsys):
    monkeypatch.setenv("PEFTBOOK_PROGRESS", "final")
    bar = progress_bar(total=600, desc="train")
    for _ in range(600):
        bar.update()
    bar.set_postfix(loss="0.0123")
    bar.close()
    bar.close()  # a second close prints nothing more
    for _ in progress_bar(range(3), desc="loop", mininterval=5, dynamic_ncols=True):  # as tiny.pretrain asks
        pass
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and err == "" and "\r" not in out
    assert re.match(r"train: 100%\|█+\| 600/600 \[.*loss=0\.0123\]$", lines[0]), lines[0]
    assert lines[1].startswith("loop: 100%|") and " 3/3 " in lines[1]


@pytest.mark.parametrize("mode", ["off", "final"])
def test_disabled_bars_stay_silent(monkeypatch, capsys, mode):
    monkeypatch.setenv("PEFTBOOK_PROGRESS", mode)
    with progress_bar(total=5, desc="x", disable=mode == "final") as bar:
        bar.update(5)
    assert capsys.readouterr() == ("", "")


def test_unknown_progress_mode_names_the_allowed_ones(monkeypatch):
    from peftbook.errors import ConfigError

    monkeypatch.setenv("PEFTBOOK_PROGRESS", "loud")
    with pytest.raises(ConfigError, match="PEFTBOOK_PROGRESS='loud' is not allowed; allowed: live, final, off"):
        progress_bar(total=1)


def test_transformers_direct_bars_are_routed_through_ours_and_put_back():
    import importlib

    from peftbook.progress import DIRECT_TQDM_MODULES, library_bars_as_ours

    modules = [importlib.import_module(name) for name in DIRECT_TQDM_MODULES]
    originals = [module.tqdm for module in modules]
    with library_bars_as_ours():
        assert all(module.tqdm is progress_bar for module in modules)
    assert [module.tqdm for module in modules] == originals
