"""The coverage matrix: every method works on tiny models of every causal-LM type transformers can build
small, or refuses at apply() with the reason; README's copy is the one they give now.

The whole enumeration (about 200 types, 125 of which build tiny) runs once per session, strict: a crash
anywhere past apply() fails here. About 3-4 minutes on 2 cores.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from peftbook import coverage
from peftbook.methods import TRAINABLE_METHODS

pytestmark = pytest.mark.unit
README = Path(__file__).resolve().parent.parent / "README.md"
# The goal: these work on at least 90% of the buildable types
GOAL = {"prompt_tuning": 0.9, "lora": 0.9, "qlora": 0.9, "full": 0.9}


@pytest.fixture(scope="session")
def matrix():
    return coverage.coverage_matrix()  # strict: any crash past apply() fails


def share_that_works(matrix, method):
    rows = matrix["results"].values()
    return sum(row[method] == coverage.WORKS for row in rows) / len(rows)


def test_every_pair_works_or_is_refused_at_apply(matrix):
    assert len(matrix["results"]) + len(matrix["skipped"]) == len(coverage.causal_lm_types())
    for model_type, row in matrix["results"].items():
        assert set(row) == set(TRAINABLE_METHODS)
        for method, result in row.items():
            assert result == coverage.WORKS or result.startswith("refused at apply ("), (model_type, method, result)


@pytest.mark.parametrize("method", sorted(GOAL))
def test_the_method_works_on_most_buildable_types(matrix, method):
    assert share_that_works(matrix, method) >= GOAL[method]


def test_structures_the_methods_infer(matrix):
    results = matrix["results"]
    for model_type in ("bloom", "gpt_neox", "olmo2", "stablelm", "cohere", "glm"):  # attention all can express
        assert set(results[model_type].values()) == {coverage.WORKS}, model_type
    assert results["falcon"]["prefix_tuning"] == coverage.WORKS  # multi-query: one key/value head in the cache
    assert results["deepseek_v3"]["prefix_tuning"] == coverage.WORKS  # the prefix in the compressed latents
    assert results["jamba"]["prefix_tuning"] == coverage.WORKS  # a hybrid: the prefix in its attention layers
    assert "does not write keys and values" in results["openai-gpt"]["prefix_tuning"]
    mamba = matrix["results"]["mamba"]
    assert mamba["lora"] == mamba["full"] == mamba["prompt_tuning"] == coverage.WORKS
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


def test_info_coverage_json_prints_the_matrix(matrix, monkeypatch, capsys):
    import json

    from peftbook.__main__ import main

    monkeypatch.setattr(coverage, "coverage_matrix", lambda types=None, strict=True: matrix)
    assert main(["info", "--coverage", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(matrix))


def test_a_linear_subclass_counts_only_if_it_computes_a_linear_map():
    """falcon's FalconLinear has a forward of its own that is x @ W.T + b; llama4's router returns a tuple."""
    from peftbook.surgery import is_linear

    falcon = coverage.tiny_model("falcon")
    fused = falcon.get_submodule("transformer.h.0.self_attention.query_key_value")
    assert type(fused).__name__ == "FalconLinear" and is_linear(fused)
    llama4 = coverage.tiny_model("llama4_text")
    routers = [module for name, module in llama4.named_modules() if name.endswith("router")]
    assert routers and not any(is_linear(router) for router in routers)


def test_the_checks_at_apply_leave_the_random_state_and_the_mode_alone():
    """apply()'s trial forwards run in eval mode with the RNG put back: a seeded run trains as before."""
    import torch

    from peftbook.surgery import trial_run

    model = coverage.tiny_model("llama")
    model.config.attention_dropout = 0.5
    model.train()
    state = torch.random.get_rng_state()
    with trial_run(model):
        assert not model.training
        model(input_ids=torch.ones(1, 4, dtype=torch.long))
        torch.rand(3)  # even a draw inside is undone
    assert model.training and torch.equal(state, torch.random.get_rng_state())
