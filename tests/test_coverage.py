"""The coverage matrix: every method works on tiny models of many architectures, or refuses at apply().

``make test`` runs README's representative types (``peftbook.coverage.REPRESENTATIVE_TYPES``) and checks
README's matrix is the one they give now; every causal-LM type of transformers runs with
``PEFTBOOK_FULL_COVERAGE=1`` (slow: about 150 types).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from peftbook import coverage
from peftbook.methods import TRAINABLE_METHODS

pytestmark = pytest.mark.unit
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def matrix():
    return coverage.coverage_matrix(coverage.REPRESENTATIVE_TYPES)  # strict: any crash past apply() fails


def test_every_pair_works_or_is_refused_at_apply(matrix):
    for model_type, row in matrix["results"].items():
        assert set(row) == set(TRAINABLE_METHODS)
        for method, result in row.items():
            assert result == coverage.WORKS or result.startswith("refused at apply ("), (model_type, method, result)
    assert set(matrix["results"]) == set(coverage.REPRESENTATIVE_TYPES)
    for model_type in ("bloom", "gpt_neox", "olmo2", "stablelm"):  # attention the methods can all express
        assert set(matrix["results"][model_type].values()) == {coverage.WORKS}, model_type
    mamba = matrix["results"]["mamba"]
    assert mamba["lora"] == mamba["full"] == coverage.WORKS
    assert "mamba" in mamba["llama_adapter"] and "recurrent state" in mamba["prefix_tuning"]


def test_readme_shows_the_current_matrix(matrix):
    block = re.search(r"<!-- coverage:start -->\n(.*?)<!-- coverage:end -->", README.read_text(), re.S)
    assert block, "README has no coverage block"
    assert block.group(1) == coverage.matrix_markdown(matrix), \
        "README's matrix is stale: regenerate it with `python -m peftbook info --coverage`"


@pytest.mark.parametrize("model_type, reason", [("bart", "encoder-decoder"), ("bert", "not causal")])
def test_types_that_cannot_be_built_tiny_say_why(model_type, reason):
    with pytest.raises(coverage.NotBuildable, match=reason):
        coverage.tiny_model(model_type)


def test_the_enumeration_is_transformers_causal_lm_mapping():
    types = coverage.causal_lm_types()
    assert len(types) > 100 and {"llama", "gpt_neox", "mamba"} <= set(types)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PEFTBOOK_FULL_COVERAGE"), reason="set PEFTBOOK_FULL_COVERAGE=1 (~150 types)")
def test_every_causal_lm_type_of_transformers():
    full = coverage.coverage_matrix()
    assert len(full["results"]) >= 0.5 * len(coverage.causal_lm_types())


def test_info_coverage_json_prints_the_matrix(matrix, monkeypatch, capsys):
    import json

    from peftbook.__main__ import main

    monkeypatch.setattr(coverage, "coverage_matrix", lambda types, strict: matrix)
    assert main(["info", "--coverage", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(matrix))
