"""The task files' schema, task loading and its errors, and the metrics (slot accuracy)."""
from __future__ import annotations

import json

import pytest

from peftbook.tasks import (KNOWN_TASKS, SPLITS, TASKS_DIR, Example, check_split, load_task, parse_mr, read_jsonl,
                            slot_counts, with_train_examples)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", KNOWN_TASKS)
def test_task_files_follow_the_schema(name):
    labels = load_task(name).labels
    for split in SPLITS:
        path = TASKS_DIR / name / f"{split}.jsonl"
        for line in path.read_text().splitlines():
            row = json.loads(line)
            assert isinstance(row["input"], str) and isinstance(row["output"], str) and row["input"] and row["output"]
            if labels:  # classification
                assert set(row) == {"input", "output", "label"} and row["label"] == row["output"]
                assert row["label"] in labels
            else:
                assert set(row) == {"input", "output"}


@pytest.mark.parametrize("name", ["sentiment", "sentiment3"])
def test_splits_are_disjoint_and_classes_are_balanced(name):
    task = load_task(name)
    test_inputs = {e.input for e in task.examples("test")}
    assert not test_inputs & {e.input for e in task.examples("train")}
    assert not test_inputs & {e.input for e in task.examples("validation")}
    labels = [e.label for e in task.examples("train")]
    assert len({labels.count(label) for label in task.labels}) == 1


def test_sentiment3_labels_follow_the_clauses():
    """positive / negative: every clause agrees; moderate: 2-3 clauses of both polarities, no overall verdict."""
    from peftbook.tiny import world

    def polarity(clause):
        words = clause.split()
        if "not" in words:  # "not bad" is positive, "not great" negative
            return "positive" if words[-1] in world.NEGATABLE_BAD else "negative"
        return "positive" if words[-1] in world.GOOD_ADJ else "negative"

    for example in load_task("sentiment3").examples("train")[:300]:
        review = example.input.split(". ")[-1].rstrip(".").lower()
        clauses = [c for part in review.replace(" but ", ", ").replace(" and ", ", ").split(", ") for c in [part] if c]
        polarities = {polarity(c) for c in clauses}
        assert example.label == (polarities.pop() if len(polarities) == 1 else "moderate"), example.input
        assert not any(overall in example.input.lower() for overall in ("overall", "in the end", "come back"))


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
    with pytest.raises(ValueError, match="known: sentiment, sentiment3, data2text"):
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


def test_with_train_examples_keeps_the_first_ones_and_names_bad_counts():
    task = load_task("sentiment3")
    few = with_train_examples(task, 64)
    assert few.examples("train") == task.examples("train")[:64]
    assert few.examples("test") == task.examples("test") and len(task.examples("train")) == 2100  # not changed
    assert with_train_examples(task, None) is task
    for bad in (0, -3, 2101, 2.5, True):
        with pytest.raises(ValueError, match=rf"train_examples={bad!r} is not allowed; use an integer from 1 to 2100"):
            with_train_examples(task, bad)
