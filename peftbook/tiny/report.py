"""Measure the quality gates of the tiny base and write its model card (README.md) and metrics.json.

Gates (from the issue that asked for the base):

1. held-out perplexity of the corpus (passages from a stream the training never saw);
2. in-context learning is real: ``sentiment`` test accuracy at 8 shots is >= 15 points above
   zero-shot, and rises with the number of shots (5 random draws of shots from train);
3. the tasks are new but learnable: zero-shot ``data2text`` slot accuracy is low, and a short full
   fine-tuning (``peftbook.tiny.finetune``) reaches >= 90% on both tasks' test splits;
4. loading the base and one forward pass take under a second on CPU.
"""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import torch

from peftbook.tiny.build import NUM_HELDOUT_DOCUMENTS, heldout_corpus

FEWSHOT_EXAMPLES = 200   # the fixed test subset of the few-shot evaluation (the first 200 of test.jsonl)
SHOTS = (0, 1, 2, 4, 8)
DRAWS = 5
# chosen on data2text's validation split (the model card has the trials)
FINETUNE_LR = {"sentiment": 1e-3, "data2text": 2e-3}


def relabelled(task, positive: str, negative: str):
    """``task`` (sentiment) with its label words replaced: positive -> ``positive``, negative -> ``negative``."""
    from dataclasses import replace

    from peftbook.tasks import Example

    words = dict(zip(task.labels, (positive, negative)))
    splits = {split: [Example(e.input, words[e.output], words[e.output]) for e in examples]
              for split, examples in task.splits.items()}
    return replace(task, labels=[positive, negative], splits=splits)


def measure_load_and_forward(model_dir: Path, repeats: int = 3) -> dict:
    """Best of ``repeats`` timings of tokenizer + model loading and one forward pass (imports warmed up)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def once() -> tuple[float, float]:
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        loaded = time.perf_counter()
        with torch.no_grad():
            model(**tokenizer("Blue Spice is a cheap Italian restaurant near the old market.", return_tensors="pt"))
        return loaded - start, time.perf_counter() - loaded

    once()  # the first call imports the model's modules
    load, forward = min((once() for _ in range(repeats)), key=sum)
    return {"load_s": round(load, 3), "forward_s": round(forward, 3), "load_and_forward_s": round(load + forward, 3)}


@torch.no_grad()
def heldout_perplexity(model, tokenizer, seed: int, seq_len: int) -> dict:
    from peftbook.tiny.pretrain import heldout_loss, token_blocks

    blocks = token_blocks(tokenizer, heldout_corpus(seed, NUM_HELDOUT_DOCUMENTS), seq_len)
    loss = heldout_loss(model, blocks)
    return {"heldout_loss": round(loss, 4), "heldout_perplexity": round(math.exp(loss), 3),
            "heldout_tokens": int(blocks.numel())}


def measure(out: Path, facts: dict) -> dict:
    from peftbook.methods.few_shot import few_shot_curve
    from peftbook.tasks import builtin_task, read_jsonl
    from peftbook.tiny.finetune import FinetuneConfig, evaluate_task, finetune
    from peftbook.tiny.world import PROBE_ONLY_PAIRS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = out / "tiny"
    tasks = {name: builtin_task(name, {s: read_jsonl(out / "tasks" / name / f"{s}.jsonl")
                                       for s in ("train", "validation", "test")})
             for name in ("sentiment", "data2text")}
    metrics: dict = {"timing": measure_load_and_forward(model_dir)}
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def fresh():
        return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()

    model = fresh()
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    metrics["vocab_size"] = model.config.vocab_size
    metrics["corpus"] = heldout_perplexity(model, tokenizer, facts.get("seed", 0), model.config.max_position_embeddings)
    sentiment = tasks["sentiment"]
    metrics["few_shot"] = {
        "sentiment": few_shot_curve(model, tokenizer, sentiment, list(SHOTS), draws=DRAWS, num_examples=FEWSHOT_EXAMPLES),
        "sentiment_calibrated": few_shot_curve(model, tokenizer, sentiment, [0, 8], draws=DRAWS,
                                               num_examples=FEWSHOT_EXAMPLES, calibrate=True),
        # the same reviews labelled blue/red, a pair that never labels anything in pretraining
        "sentiment_blue_red": few_shot_curve(model, tokenizer, relabelled(sentiment, *PROBE_ONLY_PAIRS[0]),
                                             list(SHOTS), draws=DRAWS, num_examples=FEWSHOT_EXAMPLES),
    }
    metrics["zero_shot"] = {"data2text": evaluate_task(model, tokenizer, tasks["data2text"], num_examples=FEWSHOT_EXAMPLES)}
    metrics["finetune"] = {}
    for name, task in tasks.items():
        model = fresh()
        config = FinetuneConfig(lr=FINETUNE_LR[name])
        start = time.time()
        losses = finetune(model, tokenizer, task, config)
        result = evaluate_task(model, tokenizer, task,
                               num_examples=None if task.kind == "classification" else FEWSHOT_EXAMPLES)
        metrics["finetune"][name] = {**result, "steps": config.steps, "batch_size": config.batch_size,
                                     "lr": config.lr, "final_loss": round(sum(losses[-20:]) / 20, 4),
                                     "seconds": round(time.time() - start, 1)}
    curve = metrics["few_shot"]["sentiment"]
    zero, eight = curve[0]["mean"], curve[-1]["mean"]
    means = [row["mean"] for row in curve]
    metrics["gates"] = {
        "icl_8shot_minus_0shot_points": round(100 * (eight - zero), 1),
        "icl_gain_at_least_15_points": eight - zero >= 0.15,
        # every step up, or down by at most a point (noise), and more at the end than zero-shot
        "icl_rises_with_shots": means[-1] > means[0] and all(b >= a - 0.01 for a, b in zip(means, means[1:])),
        "data2text_zero_shot_slot_accuracy": round(metrics["zero_shot"]["data2text"]["slot_accuracy"], 4),
        "finetune_sentiment_accuracy_at_least_0.9": metrics["finetune"]["sentiment"]["accuracy"] >= 0.9,
        "finetune_data2text_slot_accuracy_at_least_0.9": metrics["finetune"]["data2text"]["slot_accuracy"] >= 0.9,
        "load_and_forward_under_1s": metrics["timing"]["load_and_forward_s"] < 1.0,
    }
    return metrics


def write_report(out: str | Path, facts: dict | None = None) -> dict:
    """Measure the gates for the base under ``out/tiny`` and write its README.md and metrics.json."""
    out = Path(out)
    facts_path = out / "tiny_build" / "build_facts.json"
    if facts is None:
        if not facts_path.exists():
            raise FileNotFoundError(f"{facts_path} is missing: run `python -m peftbook tiny build` first")
        facts = json.loads(facts_path.read_text())
    metrics = measure(out, facts)
    document = {"model": "peftbook-tiny", "build": {k: v for k, v in facts.items() if k != "curve"},
                "pretraining_curve": facts.get("curve", []), **metrics,
                "machine": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads()}}
    (out / "tiny" / "metrics.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (out / "tiny" / "README.md").write_text(model_card(document))
    return document


def render_card(out: str | Path) -> None:
    """Rewrite README.md from the recorded metrics.json (no measuring)."""
    path = Path(out) / "tiny" / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m peftbook tiny report` first")
    (Path(out) / "tiny" / "README.md").write_text(model_card(json.loads(path.read_text())))


def model_card(m: dict) -> str:
    from peftbook.tiny.card import render

    return render(m)
