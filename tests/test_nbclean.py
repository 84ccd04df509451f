"""``peftbook.nbclean``: the static guard against notebooks that open "modified" in JupyterLab.

The browser check that found the cause is ``scripts/check_jupyterlab.py`` (not run here).
"""
from __future__ import annotations

import copy

import pytest

from peftbook.nbclean import KERNELSPEC, jupyterlab_dirty_causes, normalize_for_jupyterlab

LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3", "version": "3.11.7"}


def _notebook(kernelspec: dict | None) -> dict:
    """A small executed notebook as papermill writes it (papermill metadata, widget state, a widget output)."""
    metadata = {"language_info": copy.deepcopy(LANGUAGE_INFO), "papermill": {"duration": 1.0},
                "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                          "version_minor": 0}}}
    if kernelspec is not None:
        metadata["kernelspec"] = kernelspec
    cells = [{"cell_type": "markdown", "id": "m1", "metadata": {"tags": []}, "source": ["# Title"]},
             {"cell_type": "code", "execution_count": 1, "id": "c1",
              "metadata": {"execution": {}, "papermill": {}, "tags": ["parameters"]},
              "outputs": [{"output_type": "display_data", "metadata": {},
                           "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "ab", "version_major": 2,
                                                                                 "version_minor": 0},
                                    "text/plain": ["  0%|          | 0/5"]}}],
              "source": ["STEPS = 4  # steps\n"]}]
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def _without_kernelspec(nb: dict) -> dict:
    return {**nb, "metadata": {k: v for k, v in nb["metadata"].items() if k != "kernelspec"}}


# The kernelspec every committed notebook had: the pre-ipykernel-6 display name.
STALE = {"display_name": "Python 3", "language": "python", "name": "python3"}


@pytest.mark.unit
def test_stale_kernelspec_is_reported_and_normalize_fixes_it():
    nb = _notebook(copy.deepcopy(STALE))
    causes = jupyterlab_dirty_causes(nb)
    assert len(causes) == 1 and "display_name 'Python 3' -> 'Python 3 (ipykernel)'" in causes[0], causes
    fixed = normalize_for_jupyterlab(nb)
    assert jupyterlab_dirty_causes(fixed) == []
    assert fixed["metadata"]["kernelspec"] == KERNELSPEC
    assert nb["metadata"]["kernelspec"] == STALE, "normalize returns a copy; the input is unchanged"
    assert _without_kernelspec(fixed) == _without_kernelspec(nb), "only the kernelspec changes"


@pytest.mark.unit
def test_clean_notebook_reports_nothing():
    nb = _notebook(dict(KERNELSPEC))
    assert jupyterlab_dirty_causes(nb) == []
    assert normalize_for_jupyterlab(nb) == nb


@pytest.mark.unit
@pytest.mark.parametrize("kernelspec", [None, {"display_name": "Python 3 (ipykernel)", "name": "python3"},
                                        {**KERNELSPEC, "env": {}}])
def test_kernelspec_jupyterlab_would_rewrite_is_reported(kernelspec):
    nb = _notebook(kernelspec)
    assert any("kernelspec" in cause for cause in jupyterlab_dirty_causes(nb))
    assert jupyterlab_dirty_causes(normalize_for_jupyterlab(nb)) == []


@pytest.mark.unit
def test_missing_language_info_is_reported():
    nb = _notebook(dict(KERNELSPEC))
    del nb["metadata"]["language_info"]
    assert ["language_info" in cause for cause in jupyterlab_dirty_causes(nb)] == [True]
