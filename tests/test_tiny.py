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


def test_curriculum_stages_are_deterministic_and_never_show_the_task_formats():
    for stage in world.STAGE_MIXES:
        a = world.stage_documents(stage, seed=3, num_documents=400)
        assert a == world.stage_documents(stage, seed=3, num_documents=400)
        assert a != world.stage_documents(stage, seed=4, num_documents=400)
        text = "\n".join(a)
        assert "Review:" not in text and "Sentiment" not in text and "name[" not in text
    with pytest.raises(ValueError, match="unknown stage 'nope'; known: induction"):
        world.stage_documents("nope", 0, 1)


def test_polarity_episodes_label_by_polarity_in_either_direction():
    import random

    rng = random.Random(0)
    orientations = set()  # (label of good inputs, label of bad inputs) per episode
    for _ in range(200):
        lines = world.polarity_episode(rng, "word", repeat=0.0).split("\n")
        one_line = [line for line in lines if " -> " in line]
        labels = {}
        for line in one_line:
            x, y = line.split(" -> ")
            labels.setdefault(x in world.GOOD_ADJ, set()).add(y)
        if len(labels) == 2:  # both polarities: one label word each, and they differ
            assert all(len(ys) == 1 for ys in labels.values()) and labels[True] != labels[False]
            orientations.add((min(labels[True]), min(labels[False])))
    assert len(orientations) > 10 and any((bad, good) in orientations for good, bad in orientations)
    assert ("blue", "red") not in world.LABEL_PAIRS and ("low", "high") not in world.LABEL_PAIRS
    assert ("positive", "negative") in world.LABEL_PAIRS
    assert all(" " not in x for pair in world.LABEL_PAIRS for x in pair)


def test_repeat_passages_repeat_spans_of_themselves():
    import random

    rng = random.Random(1)
    words = world.repeat_passage(rng).split()
    assert set(words) <= set(world.REPEAT_WORDS)
    fours = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    assert len(set(fours)) < len(fours)  # some span of four words comes back


def test_build_runs_the_curriculum_and_a_continued_build_equals_one_run(tmp_path):
    import torch
    from safetensors.torch import load_file

    from peftbook.tiny.build import build
    from peftbook.tiny.pretrain import PretrainConfig, Stage

    config = PretrainConfig(steps=2, eval_every=2, seq_len=64, batch_size=2, hidden_size=32, intermediate_size=64,
                            num_layers=2, num_heads=2, num_kv_heads=1)
    stages = (Stage("induction", 2, 1e-3, documents=40), Stage("formats", 2, 1e-3, documents=40))
    build(tmp_path / "full", num_documents=200, config=config, curriculum=stages)
    facts = json.loads((tmp_path / "full/tiny_build/build_facts.json").read_text())
    assert [(row["stage"], row["step"]) for row in facts["curve"]] == [("world", 2), ("induction", 4), ("formats", 6)]
    assert facts["curve"][-1]["tokens"] == 6 * 2 * 64 and set(facts["curve"][-1]["repeat_loss"]) == {"first", "repeat"}
    # the same recipe in two runs: world stage only, then the curriculum continued from its saved model
    build(tmp_path / "world", num_documents=200, config=config, curriculum=())
    build(tmp_path / "cont", config=config, curriculum=stages[:1], init=tmp_path / "world/tiny")
    build(tmp_path / "cont", config=config, curriculum=stages, init=tmp_path / "cont/tiny")
    cont = json.loads((tmp_path / "cont/tiny_build/build_facts.json").read_text())
    assert [(row["stage"], row["step"]) for row in cont["curve"]] == [("world", 2), ("induction", 4), ("formats", 6)]
    assert cont["continued_from"] == str(tmp_path / "cont/tiny") and cont["pretrain"]["num_layers"] == 2
    full, parts = load_file(tmp_path / "full/tiny/model.safetensors"), load_file(tmp_path / "cont/tiny/model.safetensors")
    assert full.keys() == parts.keys() and all(torch.equal(full[k], parts[k]) for k in full)


def test_finetune_encoding_keeps_the_start_and_learns_the_target_only():
    from transformers import AutoTokenizer

    from peftbook.batching import encode_prompt
    from peftbook.tasks import load_task
    from peftbook.tiny.finetune import encode_truncating_end

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_DIR))
    task = load_task("data2text")
    example = task.examples("train")[0]
    ids, labels = encode_truncating_end(tokenizer, task, example)
    prompt = encode_prompt(tokenizer, task.prompt(example))
    assert ids[:len(prompt)] == prompt and labels[:len(prompt)] == [-100] * len(prompt)
    assert labels[len(prompt):] == ids[len(prompt):] and ids[-1] == tokenizer.eos_token_id
    assert encode_truncating_end(tokenizer, task, example, max_length=5) == (ids[:5], labels[:5])


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


def test_recorded_gates_follow_from_the_recorded_curves():
    metrics = json.loads((TINY_DIR / "metrics.json").read_text())
    curve, gates = metrics["few_shot"]["sentiment"], metrics["gates"]
    assert [row["shots"] for row in curve] == [0, 1, 2, 4, 8] and all(len(row["values"]) == 5 for row in curve[1:])
    gain = 100 * (curve[-1]["mean"] - curve[0]["mean"])
    assert gates["icl_8shot_minus_0shot_points"] == round(gain, 1)
    assert gates["icl_gain_at_least_15_points"] == (gain >= 15)


def test_the_base_learns_the_label_mapping_from_the_shots():
    """On the shipped base the shots carry the task (validation, 48 reviews): 8 shots beat zero-shot by
    15 points with the task's label words, and reach 85% with a pair that labels nothing in pretraining
    (whose zero-shot guess may already lean the right way, so there only a gain is asserted)."""
    import torch

    from peftbook import load_model, tasks
    from peftbook.methods.few_shot import few_shot_curve
    from peftbook.tiny.report import relabelled

    torch.set_num_threads(2)
    model, tokenizer = load_model("tiny", device="cpu")
    task = tasks.load_task("sentiment")
    zero, eight = few_shot_curve(model, tokenizer, task, [0, 8], draws=2, num_examples=48, split="validation",
                                 progress=False)
    assert eight["mean"] >= zero["mean"] + 0.15, (zero["mean"], eight["mean"])
    zero, eight = few_shot_curve(model, tokenizer, relabelled(task, "blue", "red"), [0, 8], draws=2, num_examples=48,
                                 split="validation", progress=False)
    assert eight["mean"] >= 0.85 and eight["mean"] > zero["mean"], (zero["mean"], eight["mean"])


def test_data_stays_small():
    total = sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file() and "tiny_build" not in p.parts)
    assert total < 30 * 2**20


def test_tiny_build_bad_input(capsys):
    from peftbook.__main__ import main

    assert main(["tiny", "build", "--seed", "-1"]) == 2
    assert "--seed -1" in capsys.readouterr().err
    assert main(["tiny", "build", "--init", "/no/such/dir"]) == 2
    assert "--init /no/such/dir: no model there" in capsys.readouterr().err
