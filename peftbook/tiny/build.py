"""``python -m peftbook tiny build``: tasks, corpus, tokenizer, base model, model card — from a seed.

Stages (each deterministic in ``seed``):

1. task files: ``<out>/tasks/<task>/{train,validation,test}.jsonl`` (committed);
2. corpus: ``num_documents`` passages (kept out of git under ``<out>/tiny_build/``) and a held-out
   set drawn from another stream;
3. tokenizer: byte-level BPE, 2048 tokens;
4. pretraining (``peftbook.tiny.pretrain``), with the loss and ICL probe curve;
5. report: the quality gates (``peftbook.tiny.report``) into ``README.md`` and ``metrics.json``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from peftbook.tiny import world
from peftbook.tiny.pretrain import PretrainConfig

TASK_SIZES = {"sentiment": {"train": 2000, "validation": 500, "test": 1000},
              "data2text": {"train": 2000, "validation": 300, "test": 500}}
NUM_DOCUMENTS = 80_000
NUM_HELDOUT_DOCUMENTS = 2_000


def write_tasks(out: Path, seed: int = 0, sizes: dict | None = None) -> dict[str, Path]:
    from peftbook.tasks import write_jsonl

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
          report: bool = True) -> Path:
    import torch

    from peftbook.tiny.pretrain import icl_probe, model_config, pretrain, token_blocks
    from peftbook.tiny.tokenizer import train_tokenizer
    from transformers import LlamaForCausalLM

    out = Path(out)
    config = config or PretrainConfig(seed=seed)
    torch.set_num_threads(config.threads)
    work = out / "tiny_build"
    model_dir = out / "tiny"
    work.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_tasks(out, seed)
    documents = make_corpus(seed, num_documents)
    heldout = heldout_corpus(seed, NUM_HELDOUT_DOCUMENTS)
    (work / "corpus.txt").write_text("\n".join(documents[:2000]) + "\n")  # a sample to read; the rest regenerates
    tokenizer = train_tokenizer(documents)
    tokenizer.save_pretrained(str(model_dir))
    train_blocks = token_blocks(tokenizer, documents, config.seq_len)
    heldout_blocks = token_blocks(tokenizer, heldout, config.seq_len)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(model_config(len(tokenizer), config))
    from peftbook.tasks import read_jsonl
    probe_train = read_jsonl(out / "tasks" / "sentiment" / "train.jsonl")
    probe_eval = read_jsonl(out / "tasks" / "sentiment" / "validation.jsonl")[:64]
    log_path = work / "curve.jsonl"
    log_path.unlink(missing_ok=True)
    def save(step: int, curve: list[dict]) -> None:  # after every evaluation: a consistent, resumable state
        model.save_pretrained(str(model_dir))
        facts = {"seed": seed, "num_documents": num_documents, "train_tokens": int(train_blocks.numel()),
                 "heldout_tokens": int(heldout_blocks.numel()), "pretrain": {**asdict(config), "steps": step},
                 "curve": curve, "build_seconds": round(time.time() - started, 1)}
        (work / "build_facts.json").write_text(json.dumps(facts, indent=2))

    pretrain(model, tokenizer, train_blocks, heldout_blocks, config,
             probe=lambda m: icl_probe(m, tokenizer, probe_train, probe_eval, seed=seed),
             log_path=log_path, on_eval=save)
    facts = json.loads((work / "build_facts.json").read_text())
    if report:
        from peftbook.tiny.report import write_report
        write_report(out, facts)
    return model_dir
