"""The task files' schema, task loading and its errors, and the metrics (slot accuracy)."""
from __future__ import annotations

import json

import pytest

from peftbook.tasks import (KNOWN_TASKS, SPLITS, TASKS_DIR, Example, check_split, load_task, parse_mr, read_jsonl,
                            slot_counts)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", KNOWN_TASKS)
def test_task_files_follow_the_schema(name):
    for split in SPLITS:
        path = TASKS_DIR / name / f"{split}.jsonl"
        for line in path.read_text().splitlines():
            row = json.loads(line)
            assert isinstance(row["input"], str) and isinstance(row["output"], str) and row["input"] and row["output"]
            if name == "sentiment":
                assert set(row) == {"input", "output", "label"} and row["label"] == row["output"]
                assert row["label"] in ("positive", "negative")
            else:
                assert set(row) == {"input", "output"}


def test_splits_are_disjoint_and_sentiment_is_balanced():
    task = load_task("sentiment")
    test_inputs = {e.input for e in task.examples("test")}
    assert not test_inputs & {e.input for e in task.examples("train")}
    assert not test_inputs & {e.input for e in task.examples("validation")}
    labels = [e.label for e in task.examples("train")]
    assert labels.count("positive") == labels.count("negative")


def test_task_interface():
    task = load_task("sentiment")
    assert (task.kind, task.labels, task.metric) == ("classification", ["positive", "negative"], "accuracy")
    example = Example(input="The soup was not bad.", output="positive", label="positive")
    assert task.prompt(example) == "Review: The soup was not bad.\nSentiment:"
    assert task.target(example) == " positive"
    assert task.score(["positive", "negative"], [example, example]) == {"accuracy": 0.5}
    d2t = load_task("data2text")
    assert (d2t.kind, d2t.labels, d2t.metric) == ("generation", None, "slot_accuracy")
    mr = Example(input="name[Blue Spice] , food[Italian]", output="Blue Spice is an Italian place.")
    assert d2t.prompt(mr) == "Meaning: name[ Blue Spice ] , food[ Italian ]\nSentence:"


def test_data2text_references_realise_every_slot():
    task = load_task("data2text")
    examples = task.examples("test")[:200]
    scores = task.score([e.output for e in examples], examples)
    assert scores["slot_accuracy"] == 1.0 and scores["bleu"] > 99 and scores["rougeL"] > 0.99


def test_slot_accuracy_counts_missing_and_hallucinated_values():
    slots = parse_mr("name[Blue Spice] , food[Italian] , area[riverside] , near[the Raja Indian Cuisine]")
    assert slots == {"name": "Blue Spice", "food": "Italian", "area": "riverside", "near": "the Raja Indian Cuisine"}
    full = "Blue Spice is an Italian place by the riverside near the Raja Indian Cuisine."
    assert slot_counts(full, slots) == (4, 4)  # "Indian" inside the landmark is not a food
    assert slot_counts("Blue Spice is an Italian place.", slots) == (2, 4)
    assert slot_counts("Blue Spice is a cheap Chinese pub by the riverside near the Raja Indian Cuisine.", slots) == (3, 7)
    family = parse_mr("name[Cotto] , familyFriendly[no]")
    assert slot_counts("Cotto is not family friendly.", family) == (2, 2)
    assert slot_counts("Cotto is family friendly.", family) == (1, 3)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: sentiment, data2text"):
        load_task("sentimant")


def test_a_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n{"input": "c"}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:2: .*'output'"):
        read_jsonl(path)
    path.write_text('{"input": "a", "output": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:2: not valid JSON"):
        load_task(str(path))


def test_local_jsonl_directory_and_file(tmp_path):
    rows = [{"input": f"x{i}", "output": "yes" if i % 2 else "no", "label": "yes" if i % 2 else "no"} for i in range(6)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(str(tmp_path))
    assert task.kind == "classification" and task.labels == ["no", "yes"] and len(task.examples("train")) == 6
    with pytest.raises(ValueError, match="no 'validation' split"):
        task.examples("validation")
    single = load_task(str(tmp_path / "test.jsonl"))
    assert len(single.examples("test")) == 6
    with pytest.raises(FileNotFoundError):
        load_task(str(tmp_path / "nope.jsonl"))


def test_hugging_face_dataset_needs_datasets_or_the_network():
    with pytest.raises(RuntimeError, match="datasets|Hugging Face dataset"):
        load_task("glue/sst2", input="sentence", output="label", labels=["negative", "positive"])


def test_bad_split_names_the_allowed_ones():
    with pytest.raises(ValueError, match="split 'dev' is not allowed; allowed: train, validation, test"):
        check_split("dev")
    with pytest.raises(ValueError, match="split 'dev' is not allowed"):
        load_task("sentiment").examples("dev")
