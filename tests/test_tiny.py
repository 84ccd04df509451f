"""The tiny world: generators' determinism, the tokenizer, the embedded base and its card."""
from __future__ import annotations

import json
import time

import pytest

from peftbook.models import DATA_DIR, TINY_DIR
from peftbook.tiny import world

pytestmark = pytest.mark.unit


def test_corpus_is_deterministic_in_the_seed():
    a = list(world.corpus_documents(seed=7, num_documents=300))
    assert a == list(world.corpus_documents(seed=7, num_documents=300))
    assert a != list(world.corpus_documents(seed=8, num_documents=300))


def test_task_generators_are_deterministic(tmp_path):
    from peftbook.tiny.build import write_tasks

    sizes = {"sentiment": {"train": 20, "validation": 6, "test": 6}, "data2text": {"train": 10, "validation": 4, "test": 4}}
    write_tasks(tmp_path / "a", seed=1, sizes=sizes)
    write_tasks(tmp_path / "b", seed=1, sizes=sizes)
    for task in sizes:
        for split in ("train", "validation", "test"):
            assert (tmp_path / "a/tasks" / task / f"{split}.jsonl").read_bytes() == \
                   (tmp_path / "b/tasks" / task / f"{split}.jsonl").read_bytes()


def test_committed_task_files_are_what_the_recipe_writes(tmp_path):
    """Regenerating with the recipe's seed gives the committed files byte for byte."""
    from peftbook.tiny.build import write_tasks

    write_tasks(tmp_path, seed=0)
    for path in sorted((DATA_DIR / "tasks").glob("*/*.jsonl")):
        assert (tmp_path / "tasks" / path.parent.name / path.name).read_bytes() == path.read_bytes(), path


def test_corpus_never_shows_the_task_formats():
    text = "\n".join(world.corpus_documents(seed=0, num_documents=5000))
    assert "Review:" not in text and "Sentiment" not in text and "Meaning:" not in text
    assert "name[" not in text and "food[" not in text and "] ," not in text
    # ... but the label words are ordinary words of the corpus
    assert text.count(" positive") > 100 and text.count(" negative") > 100


def test_tokenizer_round_trips_text_with_spaces():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_DIR))
    for text in ["Blue Spice is a cheap  Italian restaurant.\n\nReview: not bad", " positive", "name[The Eagle] , near[x]"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer(" positive", add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>" and len(tokenizer) <= 4096


def test_train_tokenizer_on_a_small_corpus():
    from peftbook.tiny.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(world.corpus_documents(seed=0, num_documents=500), vocab_size=400)
    text = "Anna went to Cotto. Her verdict was positive."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_the_base_loads_fast_and_is_a_small_gqa_llama():
    from peftbook.models import load_model

    load_model("tiny", device="cpu")  # the first load imports the modeling code
    start = time.perf_counter()
    model, tokenizer = load_model("tiny", device="cpu")
    out = model(**tokenizer("Cotto is a cheap pub.", return_tensors="pt"))
    assert time.perf_counter() - start < 5  # well under 1 s on an idle CPU (metrics.json); generous for busy CI
    config = model.config
    assert config.model_type == "llama" and config.num_hidden_layers >= 4
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 2e7
    assert out.logits.shape[-1] == config.vocab_size


def test_model_card_and_metrics_are_there():
    metrics = json.loads((TINY_DIR / "metrics.json").read_text())
    for key in ("corpus", "few_shot", "finetune", "gates", "pretraining_curve", "timing"):
        assert key in metrics
    card = (TINY_DIR / "README.md").read_text()
    assert "peftbook-tiny" in card and "tiny build" in card


def test_data_stays_small():
    total = sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file() and "tiny_build" not in p.parts)
    assert total < 30 * 2**20


def test_tiny_build_bad_input(capsys):
    from peftbook.__main__ import main

    assert main(["tiny", "build", "--seed", "-1"]) == 2
    assert "--seed -1" in capsys.readouterr().err
