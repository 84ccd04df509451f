"""Tasks: examples, how a prompt and its target are written, and the metric.

Our three tasks live as JSONL under ``data/tasks/<task>/{train,validation,test}.jsonl``, one example a
line, with one schema::

    {"input": str, "output": str, "label": str}   # label: classification only (the label word again)

* ``sentiment`` (classification, metric ``accuracy``): ``Review: <text>\\nSentiment:`` -> `` positive``
  or `` negative``.
* ``sentiment3`` (classification, metric ``accuracy``): the same template with three labels, `` positive``,
  `` negative`` or `` moderate`` (a review whose clauses disagree; it has no overall verdict).
* ``data2text`` (generation, metric ``slot_accuracy``; also BLEU via sacrebleu and ROUGE-L via
  rouge-score, ``peftbook.metrics``): ``Meaning: name[...] , food[...] ...\\nSentence:`` -> one
  sentence realising every slot. Its slot vocabulary (``NAMES``, ``FOODS``, ...) is defined here;
  the tiny world (``peftbook.tiny.world``) draws its restaurants from it.

``load_task`` also reads any local directory of such JSONL files (or one file, taken as its test
split) and, for users online, a Hugging Face dataset with a column mapping, e.g.
``load_task("glue/sst2", input="sentence", output="label", labels=["negative", "positive"])`` or
``load_task("e2e_nlg", input="meaning_representation", output="human_reference")``. The test split
is for reporting only: never train on it or choose hyperparameters with it.

**Slot accuracy** (data2text): for every example, each meaning-representation value counts as
realised when the prediction contains it (rules per slot below); every value of the slot
vocabulary that the prediction mentions but the MR does not is a hallucination. The score is
``sum(realised) / sum(number of MR slots + hallucinations)`` over the examples, so it is 1 only when
everything is said and nothing is made up. Names and landmarks are matched first and blanked out,
so "the Raja Indian Cuisine" does not count as the food "Indian".
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from peftbook.errors import DataError
from peftbook.metrics import text_metrics
from peftbook.models import DATA_DIR

TASKS_DIR = DATA_DIR / "tasks"
KNOWN_TASKS = ("sentiment", "sentiment3", "data2text")
SPLITS = ("train", "validation", "test")

# The data2text slot vocabulary: the values of each meaning-representation slot.
NAMES = ["Blue Spice", "The Eagle", "Cotto", "The Mill", "Green Man", "The Phoenix", "Zizzi", "Aromi",
         "The Punter", "Fitzbillies", "Giraffe", "Loch Fyne", "The Vaults", "Wildwood", "Alimentum",
         "Bibimbap House", "Browns Cambridge", "Clowns", "Cocum", "The Cricketers", "The Dumpling Tree",
         "The Golden Curry", "The Olive Grove", "The Plough", "The Rice Boat", "The Twenty Two",
         "The Waterman", "Strada", "Midsummer House", "The Wrestlers", "Taste of Cambridge",
         "The Cambridge Blue", "Travellers Rest Beefeater", "Red Lion", "The Sorrento", "Copper Pot"]  # name
LANDMARKS = ["the Crowne Plaza Hotel", "the Rainbow Vegetarian Cafe", "the Burger King", "the Express by Holiday Inn",
             "the Raja Indian Cuisine", "the Bakers", "the Portland Arms",
             "the old market", "the Ranch", "the Six Bells", "the Yippee Noodle Bar", "the All Bar One",
             "the Avalon", "the Four Seasons", "the Caf\u00e9 Brazil", "the Magdalene Bridge"]  # near
EAT_TYPES = ["restaurant", "coffee shop", "pub"]  # eatType
FOODS = ["Italian", "French", "Chinese", "Indian", "Japanese", "English", "Fast food"]  # food
PRICES = ["cheap", "moderate", "high"]  # priceRange
AREAS = ["city centre", "riverside"]  # area
RATINGS = ["1 out of 5", "3 out of 5", "5 out of 5"]  # customer rating
FAMILY = ["yes", "no"]  # familyFriendly


@dataclass
class Example:
    """One JSONL line."""

    input: str    # the review / the meaning representation
    output: str   # the label word (classification) or the reference sentence (generation)
    label: str | None = None  # classification only: the label word again


@dataclass
class Task:
    """A task: its examples per split, its prompt template and its metric."""

    name: str
    kind: str                      # "classification" | "generation"
    labels: list[str] | None       # label words for classification
    metric: str                    # primary metric: "accuracy" | "slot_accuracy" | "rougeL"
    prompt_template: str = "Input: {input}\nOutput:"
    # data2text: write ``name[ Blue Spice ]`` in prompts, so that values tokenize as in prose. A
    # byte-level BPE gives "Blue" after "[" other tokens than " Blue"; without the space the tiny
    # base, fine-tuned, wrote fluent sentences with the wrong names (see its model card).
    space_mr_values: bool = False
    splits: dict[str, list[Example]] = field(default_factory=dict, repr=False)
    source: str = ""

    def examples(self, split: str) -> list[Example]:
        check_split(split)
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no {split!r} split (it has: {', '.join(self.splits) or 'none'})")
        return self.splits[split]

    def prompt(self, example: Example) -> str:
        """The text the model sees before the target."""
        text = example.input
        if self.space_mr_values:
            text = " , ".join(f"{slot}[ {value} ]" for slot, value in parse_mr(text).items())
        return self.prompt_template.format(input=text)

    def target(self, example: Example) -> str:
        """The text to predict (callers append eos for generation)."""
        return " " + example.output

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        """All metrics of the task; the primary one under ``self.metric``."""
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples; "
                             "give one prediction per example")
        if self.kind == "classification":
            correct = sum(p.strip() == e.output.strip() for p, e in zip(predictions, examples))
            return {"accuracy": correct / max(1, len(examples))}
        return generation_metrics(predictions, [e.output for e in examples],
                                  [e.input for e in examples] if self.metric == "slot_accuracy" else None)


def check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of ``SPLITS``."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not allowed; allowed: {', '.join(SPLITS)}")


# ---------------------------------------------------------------------------------------------
# Metrics for generation
def generation_metrics(predictions: list[str], references: list[str], meaning_representations=None) -> dict:
    """BLEU and ROUGE-L, and slot accuracy when the meaning representations are given."""
    predictions = [p.strip() for p in predictions]
    out = text_metrics(predictions, references)
    if meaning_representations is not None:
        realised = total = 0
        for p, mr in zip(predictions, meaning_representations):
            r, t = slot_counts(p, parse_mr(mr))
            realised += r
            total += t
        out["slot_accuracy"] = realised / max(1, total)
    return out


_MR_ITEM = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*")


def parse_mr(mr: str) -> dict[str, str]:
    """``"name[Blue Spice] , food[Italian]"`` -> ``{"name": "Blue Spice", "food": "Italian"}``."""
    return {m.group(1): m.group(2) for m in _MR_ITEM.finditer(mr)}


# slot -> value -> lower-case phrases that realise it (names, landmarks and familyFriendly are matched apart)
SLOT_PHRASES: dict[str, dict[str, list[str]]] = {
    "eatType": {v: [v] for v in EAT_TYPES},
    "food": {v: [v.lower()] for v in FOODS},
    "priceRange": {"cheap": ["cheap"], "moderate": ["moderate"], "high": ["expensive", "high price"]},
    "area": {v: [v] for v in AREAS},
    "customer rating": {v: [v] for v in RATINGS},
}


def slot_counts(prediction: str, slots: dict[str, str]) -> tuple[int, int]:
    """(realised MR values, MR values + hallucinated values) for one prediction."""
    text = " " + prediction.lower() + " "
    realised, hallucinated = 0, 0
    wanted = {v.lower() for k, v in slots.items() if k in ("name", "near")}
    for entity in sorted({n.lower() for n in NAMES + LANDMARKS} | wanted, key=len, reverse=True):
        if entity in text:
            text = text.replace(entity, " # ")
            if entity in wanted:
                realised += 1
                wanted.discard(entity)
            else:
                hallucinated += 1
    for slot, values in SLOT_PHRASES.items():
        for value, phrases in values.items():
            if any(phrase in text for phrase in phrases):
                if slots.get(slot, "").lower() == value.lower():
                    realised += 1
                else:
                    hallucinated += 1
    family = slots.get("familyFriendly")
    said_no = "not family friendly" in text or "not family-friendly" in text
    said_yes = not said_no and ("family friendly" in text or "family-friendly" in text)
    if family is not None:
        realised += (family == "yes" and said_yes) or (family == "no" and said_no)
    hallucinated += (said_yes or said_no) and family not in (("yes",) if said_yes else ("no",))
    # values of slots outside our vocabularies (a user's own MR) count when their text appears
    for slot, value in slots.items():
        if slot not in ("name", "near", "familyFriendly", *SLOT_PHRASES) and value.lower() in text:
            realised += 1
    return realised, len(slots) + hallucinated


# ---------------------------------------------------------------------------------------------
# Loading
_BUILTIN = {
    "sentiment": dict(kind="classification", labels=["positive", "negative"], metric="accuracy",
                      prompt_template="Review: {input}\nSentiment:"),
    # three-way: a review whose clauses disagree (and that says nothing overall) is "moderate"; the label
    # words are single tokens the base knows ("mixed" is three pieces of a word it never saw)
    "sentiment3": dict(kind="classification", labels=["positive", "negative", "moderate"], metric="accuracy",
                       prompt_template="Review: {input}\nSentiment:"),
    "data2text": dict(kind="generation", labels=None, metric="slot_accuracy",
                      prompt_template="Meaning: {input}\nSentence:", space_mr_values=True),
}


def builtin_task(name: str, splits: dict[str, list[Example]]) -> Task:
    """A known task (its template and metric) over examples given in memory."""
    return _from_rows(name, splits, "memory", **_BUILTIN[name])


def read_jsonl(path: str | Path) -> list[Example]:
    """Read one JSONL file of ``{"input", "output"[, "label"]}`` lines; errors name file and line."""
    path = Path(path)
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte {raw[error.start]:#04x} at column "
                                f"{error.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object with 'input' and 'output'")
            missing = [k for k in ("input", "output") if not isinstance(row.get(k), str)]
            if missing:
                raise DataError(f"{path}:{number}: missing or non-string field(s) {missing}; "
                                "each line needs 'input' and 'output' (and 'label' for classification)")
            if row.get("label") is not None and not isinstance(row["label"], str):
                raise DataError(f"{path}:{number}: label {row['label']!r} is a {type(row['label']).__name__}; "
                                "labels are strings (write \"label\": \"" + str(row["label"]) + "\")")
            rows.append(Example(input=row["input"], output=row["output"], label=row.get("label")))
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write rows with sorted keys, one per line (deterministic bytes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def _from_rows(name: str, splits: dict[str, list[Example]], source: str, **spec) -> Task:
    if not spec:
        any_rows = [e for rows in splits.values() for e in rows]
        if any_rows and all(e.label is not None for e in any_rows):
            spec = dict(kind="classification", labels=sorted({e.label for e in any_rows}), metric="accuracy",
                        prompt_template="Input: {input}\nLabel:")
        else:
            spec = dict(kind="generation", labels=None, metric="rougeL", prompt_template="Input: {input}\nOutput:")
    if spec["kind"] == "classification":
        for split, rows in splits.items():
            for number, e in enumerate(rows, 1):
                if e.label is None:
                    raise DataError(f"{source} ({split}), example {number}: classification needs a 'label' field")
    return Task(name=name, splits=splits, source=source, **spec)


@dataclass
class ChatTask(Task):
    """A task written for an instruct model (``with_chat_template``): each prompt is one user turn through the
    tokenizer's chat template, up to where the assistant's answer starts, and the target is that answer."""

    tokenizer: object = field(default=None, repr=False, compare=False)

    def prompt(self, example: Example) -> str:
        turn = [{"role": "user", "content": super().prompt(example).strip()}]
        return self.tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)

    def target(self, example: Example) -> str:
        return example.output.strip()  # the answer starts the assistant's turn: no space before it


def with_chat_template(task: Task, tokenizer) -> ChatTask:
    """``task`` with its prompts written as chat turns by ``tokenizer``'s chat template (an instruct
    model's): training, validation and scoring all see ``<user turn> <assistant: label>``. Few-shot
    prompting takes its own ``FewShotConfig(chat=True)`` on the plain task instead (each demonstration a turn).
    Whether it helps is the model's and the task's: on SmolLM2-135M-Instruct and sentiment3 it does not
    (it lowers the untrained model and prompt, prefix and full fine-tuning; benchmarks/smollm2_chat.py)."""
    if isinstance(task, ChatTask):
        raise ValueError(f"task {task.name!r} is already written with a chat template")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("with_chat_template needs a tokenizer with a chat template (an instruct model's); "
                         "this one has none")
    return ChatTask(**{f: getattr(task, f) for f in task.__dataclass_fields__}, tokenizer=tokenizer)


def with_train_examples(task: Task, count: int | None) -> Task:
    """``task`` trained on only the first ``count`` examples of its (shuffled) train split; None: all.

    The data-efficiency setting (T-Few, Liu et al. 2022, arXiv 2205.05638): every method, few-shot
    prompting included, gets the same ``count`` labelled examples; validation and test are unchanged.
    """
    if count is None:
        return task
    available = len(task.examples("train"))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= available:
        raise ValueError(f"train_examples={count!r} is not allowed; use an integer from 1 to {available} "
                         f"(the train split of {task.name!r}), or None for all")
    return replace(task, splits={**task.splits, "train": task.examples("train")[:count]})


def load_task(name_or_path: str, **column_mapping) -> Task:
    """Load ``"sentiment"``, ``"data2text"``, a local directory/JSONL file, or a Hugging Face dataset.

    Args:
        name_or_path: a known task, a directory holding ``{train,validation,test}.jsonl``, one JSONL
            file (its test split), or a Hugging Face dataset name (needs ``datasets`` and the network).
        column_mapping: for Hugging Face datasets: ``input=`` and ``output=`` column names, and
            ``labels=[...]`` to turn integer class ids into label words (classification).
    """
    name = str(name_or_path)
    if name in _BUILTIN:
        directory = TASKS_DIR / name
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} does not exist; build the task files with `python -m peftbook tiny build`")
        splits = {s: read_jsonl(directory / f"{s}.jsonl") for s in SPLITS if (directory / f"{s}.jsonl").exists()}
        return _from_rows(name, splits, str(directory), **_BUILTIN[name])
    path = Path(name).expanduser()
    if path.is_dir():
        splits = {s: read_jsonl(path / f"{s}.jsonl") for s in SPLITS if (path / f"{s}.jsonl").exists()}
        if not splits:
            raise FileNotFoundError(f"{path} holds none of {', '.join(s + '.jsonl' for s in SPLITS)}")
        return _from_rows(path.name, splits, str(path))
    if path.suffix == ".jsonl":
        if not path.exists():
            raise FileNotFoundError(f"task file {path} does not exist")
        return _from_rows(path.stem, {"test": read_jsonl(path)}, str(path))
    if "/" not in name and not column_mapping:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(KNOWN_TASKS)}, a local directory or .jsonl file, "
                         "or a Hugging Face dataset name with input=/output= columns")
    return _load_hf(name, **column_mapping)


def _load_hf(name: str, input: str = "input", output: str = "output", labels: list[str] | None = None,
             config: str | None = None) -> Task:
    try:
        import datasets
    except ImportError:
        raise RuntimeError(f"loading the Hugging Face dataset {name!r} needs the `datasets` package "
                           "(pip install datasets), which is not installed") from None
    if "/" in name and config is None and name.count("/") == 1 and name.split("/")[0] in ("glue", "super_glue"):
        name, config = name.split("/")
    try:
        dataset = datasets.load_dataset(name, config)
    except Exception as error:  # offline hub, unknown name, ...
        raise RuntimeError(f"could not load the Hugging Face dataset {name!r} (offline, or no such dataset?): "
                           f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    names = {"train": "train", "validation": "validation", "test": "test"}
    splits: dict[str, list[Example]] = {}
    for split, hf_split in names.items():
        if hf_split not in dataset:
            continue
        rows = []
        for row in dataset[hf_split]:
            if input not in row or output not in row:
                raise ValueError(f"dataset {name!r} has columns {sorted(row)}; map them with input=... output=...")
            value = row[output]
            if labels is not None:
                if not isinstance(value, int) or not 0 <= value < len(labels):
                    continue  # e.g. GLUE's hidden test labels (-1)
                value = labels[value]
            rows.append(Example(input=str(row[input]), output=str(value), label=str(value) if labels else None))
        splits[split] = rows
    spec = (dict(kind="classification", labels=list(labels), metric="accuracy", prompt_template="Input: {input}\nLabel:")
            if labels else dict(kind="generation", labels=None, metric="rougeL", prompt_template="Input: {input}\nOutput:"))
    return Task(name=name, splits=splits, source=f"hf:{name}", **spec)
