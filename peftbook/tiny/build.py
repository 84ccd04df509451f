"""``python -m peftbook tiny build``: tasks, corpus, tokenizer, base model, model card — from a seed.

Stages (each deterministic in ``seed``; ``build`` runs 1-4):

1. task files: ``<out>/tasks/<task>/{train,validation,test}.jsonl`` (committed);
2. corpus: ``num_documents`` passages (kept out of git under ``<out>/tiny_build/``) and a held-out
   set drawn from another stream;
3. tokenizer: byte-level BPE, 2048 tokens;
4. pretraining (``peftbook.tiny.pretrain``): the world stage on the corpus, then the curriculum
   (``pretrain.CURRICULUM``: induction, polarity, formats, reviews), with the loss, induction and ICL
   probe curve;
5. report (``peftbook.tiny.report.write_report``, which ``tiny build`` runs after ``build``): the
   quality gates into ``README.md`` and ``metrics.json``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from peftbook.tasks import read_jsonl, write_jsonl
from peftbook.tiny import world
from peftbook.tiny.pretrain import PretrainConfig

TASK_SIZES = {"sentiment": {"train": 2000, "validation": 500, "test": 1000},
              "sentiment3": {"train": 2100, "validation": 600, "test": 1200},  # multiples of its 3 classes
              "data2text": {"train": 2000, "validation": 300, "test": 500}}
NUM_DOCUMENTS = 80_000
NUM_HELDOUT_DOCUMENTS = 2_000


def write_tasks(out: Path, seed: int = 0, sizes: dict | None = None) -> dict[str, Path]:
    """Write every task's splits as JSONL under ``out/tasks/<task>/``; returns the task directories."""
    paths = {}
    for task, task_sizes in (sizes or TASK_SIZES).items():
        splits = world.task_examples(task, seed, task_sizes)
        for split, rows in splits.items():
            write_jsonl(out / "tasks" / task / f"{split}.jsonl", rows)
        paths[task] = out / "tasks" / task
    return paths


def make_corpus(seed: int, num_documents: int) -> list[str]:
    return list(world.corpus_documents(seed, num_documents))


def heldout_corpus(seed: int, num_documents: int) -> list[str]:
    return list(world.corpus_documents(seed + 1_000_003, num_documents))  # another stream


def build(out: str | Path, seed: int = 0, num_documents: int = NUM_DOCUMENTS, config: PretrainConfig | None = None,
          curriculum=None, init: str | Path | None = None) -> Path:
    """Run the recipe into ``out`` (up to the report); returns the model directory.

    ``curriculum``: the stages after the world corpus (default ``pretrain.CURRICULUM``; ``()`` for
    none). ``init``: a model directory made by this recipe (model, tokenizer, and the build's facts:
    ``../tiny_build/build_facts.json`` or ``metrics.json``) to continue: the stages it has done are
    not run again (each stage starts from the saved weights with a fresh optimizer, as in one run).
    """
    import torch

    from peftbook.tiny.pretrain import CURRICULUM, icl_probe, model_config, pretrain, token_blocks
    from peftbook.tiny.tokenizer import train_tokenizer
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = Path(out)
    config = config or PretrainConfig(seed=seed)
    curriculum = CURRICULUM if curriculum is None else tuple(curriculum)
    torch.set_num_threads(config.threads)
    work = out / "tiny_build"
    model_dir = out / "tiny"
    work.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_tasks(out, seed)
    heldout = heldout_corpus(seed, NUM_HELDOUT_DOCUMENTS)
    if init is None:
        documents = make_corpus(seed, num_documents)
        (work / "corpus.txt").write_text("\n".join(documents[:2000]) + "\n")  # a sample to read; the rest regenerates
        tokenizer = train_tokenizer(documents)
    else:
        init = Path(init)
        tokenizer = AutoTokenizer.from_pretrained(str(init))
        done_facts = _done_facts(init)
    tokenizer.save_pretrained(str(model_dir))
    heldout_blocks = token_blocks(tokenizer, heldout, config.seq_len)
    probe_train = read_jsonl(out / "tasks" / "sentiment" / "train.jsonl")
    probe_eval = read_jsonl(out / "tasks" / "sentiment" / "validation.jsonl")[:64]
    log_path = work / "curve.jsonl"
    log_path.unlink(missing_ok=True)
    facts: dict = {}

    def save(step: int, curve: list[dict]) -> None:  # after every evaluation: a consistent, resumable state
        model.save_pretrained(str(model_dir))
        facts.update(curve=previous + curve, build_seconds=round(time.time() - started, 1) + earlier_seconds,
                     total_steps=step, stage_reached=curve[-1]["stage"])
        if curve[-1]["stage"] == "world":
            facts["world_seconds"] = facts["build_seconds"]
        (work / "build_facts.json").write_text(json.dumps(facts, indent=2))

    def probe(m):
        return icl_probe(m, tokenizer, probe_train, probe_eval, seed=seed)

    if init is None:
        train_blocks = token_blocks(tokenizer, documents, config.seq_len)
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(model_config(len(tokenizer), config))
        facts.update(seed=seed, num_documents=num_documents, train_tokens=int(train_blocks.numel()),
                     heldout_tokens=int(heldout_blocks.numel()), pretrain=asdict(config))
        previous, earlier_seconds = [], 0.0
        pretrain(model, tokenizer, train_blocks, heldout_blocks, config, probe=probe, log_path=log_path, on_eval=save)
        del train_blocks, documents
    else:
        model = LlamaForCausalLM.from_pretrained(str(init))
        facts.update({k: v for k, v in done_facts.items() if k != "curve"}, continued_from=str(init))
        previous, earlier_seconds = done_facts["curve"], done_facts["build_seconds"]
        facts.update(curve=previous, build_seconds=earlier_seconds)  # known so far, even if no stage is left
    facts["curriculum"] = [asdict(stage) for stage in curriculum]
    (work / "build_facts.json").write_text(json.dumps(facts, indent=2))
    finished = {row.get("stage", "world") for row in facts["curve"]}
    for stage in curriculum:
        if stage.name in finished:
            continue
        stage_blocks = token_blocks(tokenizer, world.stage_documents(stage.name, seed, stage.documents), config.seq_len)
        stage_config = replace(config, steps=stage.steps, lr=stage.lr, warmup=stage.warmup,
                               eval_every=max(config.eval_every, stage.steps // 4))
        previous = list(facts["curve"])
        done = (previous[-1]["step"], previous[-1]["tokens"]) if previous else (0, 0)
        facts["curriculum_tokens"] = facts.get("curriculum_tokens", 0) + int(stage_blocks.numel())
        pretrain(model, tokenizer, stage_blocks, heldout_blocks, stage_config, probe=probe, log_path=log_path,
                 on_eval=save, stage=stage.name, offset=done)
    return model_dir


def _done_facts(init: Path) -> dict:
    """How the model in ``init`` was made: its build's build_facts.json, or the build section of its metrics.json."""
    for path in (init / "tiny_build" / "build_facts.json", init.parent / "tiny_build" / "build_facts.json"):
        if path.exists():
            return json.loads(path.read_text())
    path = init / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{init} has neither ../tiny_build/build_facts.json nor metrics.json: "
                                "cannot tell how it was made")
    metrics = json.loads(path.read_text())
    build = metrics["build"]
    return {**build, "world_seconds": build.get("world_seconds", build["build_seconds"]),
            "curve": [{"stage": "world", **row} for row in metrics["pretraining_curve"]]}
