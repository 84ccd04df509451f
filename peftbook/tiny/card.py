"""The model card (data/tiny/README.md) of the tiny base, written from its measured metrics."""
from __future__ import annotations


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


_HISTORY = [
    "", "## How the recipe was found", "",
    "Nine recipes, each measured on 2 CPU cores (probes: 64 *validation* reviews). The world corpus alone (1-3) "
    "taught the format but no in-context learning:", "",
    "1. one fixed key pair per episode mapping: 8-shot 89% under keys seen in pretraining, but 53% (one label "
    "for every review) under new keys such as `Review:/Sentiment:`, at any k;",
    "2. keys drawn from pools and made-up words, 15% of polarity episodes flipped (the world stage of this "
    "base): the format generalises, zero-shot ~90%, and the shots add nothing (-1.6 points at 8 shots);",
    "3. as 2 with half the polarity episodes flipped, so that only the shots could tell the direction: at "
    "chance at every k through 2,600 steps, even on its own event episodes.", "",
    "Underneath, the world stage had **no induction**: 30 random corpus words repeated once cost it 10.23 "
    "nats per token the first time and 10.30 the second. Continuing it (1,200-1,600 steps each):", "",
    "4. arbitrary-label polarity episodes (25 word pairs, either direction, 30% exact repeats): the prior fades "
    "(zero-shot 91% -> 66%), 8-shot 52%;",
    "5. as 4 plus 30% repeated random word sequences: still no induction (4.69 -> 4.62 nats);",
    "6. 60% repeated random word sequences, lr 2e-3: induction forms between steps 1,000 and 1,500 "
    "(4.80 -> 0.48 nats); few-shot still at chance;",
    "7. 6 continued with polarity episodes over whole reviews: a repeated review's label 67%, a new one's at "
    "chance;",
    "8. 7 continued with episodes whose inputs are **single adjectives** (polarity in the word itself), then "
    "clauses and reviews: the label of a *new* input is copied from a same-polarity example (one-line "
    "`x -> y` formats, 12-example episodes: adjectives 95%, reviews 76%; label pairs held out of these "
    "episodes 83% / 69%), but not yet in two-line `Key: x` / `Key: y` formats like the task's (51%);",
    "9. 8 continued with 70% two-line formats: under the task's own `Review:/Sentiment:` template, with "
    "the held-out label pairs, reviews 87%; on `sentiment` validation (200 reviews, 5 draws) positive/negative "
    "0 / 4 / 8 shots 66% / 84% / 81%, blue/red 52% / 92% / 79%.", "",
    "This base runs 6, 8 and 9 from the world stage (7 skipped), with positive/negative also among the "
    "episodes' label pairs (held out in 8 and 9), plus a fourth stage with "
    "more reviews. Measured along the way: after `induction` the repeat costs 0.67 nats instead of 4.73; "
    "400 steps into `formats` the one-line episodes copy by polarity (adjectives 90%, clauses 69%, reviews "
    "49%) but the task's template is still at chance; after `formats`, `sentiment` test (200 reviews, 5 "
    "draws) reads 66% / 77% / 83% / 92% / 87% at 0 / 1 / 2 / 4 / 8 shots, the 8-shot mean pulled down by "
    "one draw (61%); `reviews` removed that dip (the table above).",
    "",
    "Two choices about the tasks were measured on earlier bases, while the recipe was being written "
    "(not re-measured on this one):", "",
    "* the fine-tuning learning rate of `data2text`, on its validation split (150 MRs): 600 steps at lr 1e-3 "
    "gave 85% slot accuracy, 1,000 steps at 1e-3 99.9%, 600 steps at 2e-3 100% (the lr used above);",
    "* the spaces inside the brackets of `data2text` prompts (`name[ Blue Spice ]`): a byte-level BPE splits "
    "\"Blue\" after \"[\" into other tokens than \" Blue\", and without the spaces the fine-tuned base wrote "
    "fluent sentences with the wrong names (slot accuracy 30%).",
    "",
]


def render(m: dict) -> str:
    build, pre = m["build"], m["build"]["pretrain"]
    timing, corpus = m["timing"], m["corpus"]
    curve = m["few_shot"]["sentiment"]
    calibrated = {row["shots"]: row for row in m["few_shot"]["sentiment_calibrated"]}
    blue_red = {row["shots"]: row for row in m["few_shot"].get("sentiment_blue_red", [])}
    ft, gates = m["finetune"], m["gates"]
    stages = build.get("curriculum", [])
    lines = [
        "---", "license: mit", "library_name: transformers", "pipeline_tag: text-generation", "---", "",
        "# peftbook-tiny", "",
        f"A {m['parameters'] / 1e6:.2f}M-parameter Llama-architecture causal LM that knows a small synthetic world "
        "(restaurants, people, reviews) but not peftbook's two tasks, so that few-shot prompting and every PEFT method "
        "show real effects on a laptop CPU, offline. Made entirely by peftbook's own code: "
        "`python -m peftbook tiny build` regenerates the corpus, the task files, the tokenizer and this model "
        "from a seed (here {seed}).".format(seed=build["seed"]), "",
        "## How it was made", "",
        f"* **World corpus**: {build['num_documents']:,} generated passages ({build['train_tokens']:,} tokens in "
        f"{pre['seq_len']}-token blocks): restaurant descriptions in prose, stories of visits with a verdict "
        "(\"... In the end Sara felt negative.\"), ordinary uses of the label words, and bursty *episodes* of other "
        "mappings (opposites, capitals, categories, weather/events -> good/bad, happy/sad, positive/negative, "
        "remarks -> a tone word) in eleven formats, their `Key:` names drawn from pools or made up. Never the "
        "`Review: ... Sentiment:` template, never the "
        "`name[...] , food[...]` meaning-representation format. See `peftbook/tiny/world.py`.",
        f"* **Tokenizer**: byte-level BPE (`tokenizers`), {m['vocab_size']:,} tokens, trained on the world corpus; "
        "round-trips text.",
        f"* **Model**: `LlamaForCausalLM`, {pre['num_layers']} layers, hidden {pre['hidden_size']}, MLP "
        f"{pre['intermediate_size']}, {pre['num_heads']} query heads / {pre['num_kv_heads']} key-value heads "
        f"(grouped-query attention), tied embeddings, context {pre['seq_len']}.",
        f"* **World stage**: {pre['steps']} steps of {pre['batch_size']} x {pre['seq_len']} tokens, AdamW "
        f"(lr {pre['lr']}, {pre['warmup']} warm-up steps, then inverse-square-root decay, weight decay "
        f"{pre['weight_decay']}), {pre['threads']} CPU threads, seed {pre['seed']}.",
    ]
    if stages:
        lines += [
            "* **Curriculum** (`peftbook.tiny.pretrain.CURRICULUM`, passages from `world.stage_documents`), each "
            "stage a warm restart of AdamW with the same batch; "
            f"{build.get('curriculum_tokens', 0):,} tokens of passages ({stages[0]['documents']:,} per stage), "
            f"{_curriculum_tokens_seen(m['pretraining_curve']):,} tokens of training:",
            *[f"  {i}. `{st['name']}`: {st['steps']} steps, lr {st['lr']} ({st['warmup']} warm-up steps), "
              + _STAGE_TEXT.get(st["name"], "") for i, st in enumerate(stages, 1)],
        ]
    seconds = build["build_seconds"]
    world_seconds = build.get("world_seconds", seconds)
    lines += [
        f"* **Build time**: {seconds / 60:.0f} minutes on 2 shared CPU cores (other jobs ran beside it)"
        + (f", {world_seconds / 60:.0f} of them the world stage" if stages else "")
        + ("; the stages ran in more than one process, each continuing the saved model of the one before "
           "(`tiny build --init DIR`; a test checks that this gives the weights of one run)"
           if build.get("continued_from") else "") + ".", "",
        "## Measured", "",
        f"* Held-out perplexity of the world corpus: **{corpus['heldout_perplexity']:.2f}** "
        f"({corpus['heldout_tokens']:,} tokens from a stream training never saw).",
        f"* Load + one forward pass on CPU: {timing['load_and_forward_s']:.2f} s "
        f"(load {timing['load_s']:.2f} s, forward {timing['forward_s']:.3f} s; Python imports not counted).", "",
        f"**In-context learning** on `sentiment` (first 200 test reviews, shots drawn from train, "
        f"{len(curve[-1]['values'])} draws; label chosen by the log-likelihood of ` positive` vs ` negative`; "
        "*calibrated*: contextual calibration; *blue/red*: the same reviews labelled with a pair that labels "
        "nothing in pretraining):", "",
        "| shots | accuracy (mean ± std) | calibrated | blue/red |", "|---:|---:|---:|---:|",
    ]
    for row in curve:
        cells = [f"{_pct(row['mean'])} ± {100 * row['std']:.1f}"]
        for other in (calibrated, blue_red):
            c = other.get(row["shots"])
            cells.append(f"{_pct(c['mean'])} ± {100 * c['std']:.1f}" if c else "")
        lines.append(f"| {row['shots']} | " + " | ".join(cells) + " |")
    d2t0 = m["zero_shot"]["data2text"]
    lines += [
        "", f"8 shots minus zero-shot: **{gates['icl_8shot_minus_0shot_points']:+.1f} points** "
        f"(gate: >= 15: {'met' if gates['icl_gain_at_least_15_points'] else 'NOT met'}); rises with shots: "
        f"{'yes' if gates['icl_rises_with_shots'] else 'no'}.", "",
    ]
    if stages:
        lines += [
            "Why zero-shot is low: in this world, `Key: text` / `Key: word` lists use positive/negative (like 26 "
            "other word pairs) for either polarity, so without examples the base can only lean on what the words "
            "mean in its stories (\"... felt negative\"); the examples say which way round the task goes, and the "
            "base reads the polarity of the new review and copies the label of the examples that share it. The "
            "blue/red column asks the same of a pair that never labels anything in pretraining.", "",
        ]
    lines += [
        "**New but learnable tasks**:", "",
        f"* `data2text` zero-shot (first 200 test MRs, greedy): slot accuracy {_pct(d2t0['slot_accuracy'])}, "
        f"BLEU {d2t0['bleu']:.1f}, ROUGE-L {d2t0['rougeL']:.3f}.",
        f"* Full fine-tuning, {ft['sentiment']['steps']} steps of batch {ft['sentiment']['batch_size']} "
        f"(`peftbook/tiny/finetune.py`): `sentiment` (lr {ft['sentiment']['lr']}) test accuracy "
        f"**{_pct(ft['sentiment']['accuracy'])}** (all 1,000) in {ft['sentiment']['seconds']:.0f} s; `data2text` "
        f"(lr {ft['data2text']['lr']}) slot accuracy "
        f"**{_pct(ft['data2text']['slot_accuracy'])}**, BLEU {ft['data2text']['bleu']:.1f}, ROUGE-L "
        f"{ft['data2text']['rougeL']:.3f} (first 200 test MRs) in {ft['data2text']['seconds']:.0f} s.", "",
        "| gate | result |", "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in gates.items()]
    lines += [
        "", "## Pretraining curve", "",
        "Held-out loss of the world corpus, the loss on 30 random words and on their exact repeat (induction "
        "makes the repeat cheap), and the ICL probe (64 *validation* reviews, 2 draws) during pretraining:", "",
        "| stage | step | tokens | held-out loss | words / repeat (nats) | 0-shot | 4-shot | 8-shot |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in m["pretraining_curve"]:
        icl = row.get("icl_accuracy", {})
        rep = row.get("repeat_loss")
        lines.append(f"| {row.get('stage', 'world')} | {row['step']} | {row['tokens']:,} | {row['heldout_loss']:.3f} | "
                     + (f"{rep['first']:.2f} / {rep['repeat']:.2f}" if rep else "") + " | "
                     + " | ".join(_pct(icl[k]) if k in icl else "" for k in ("0", "4", "8")) + " |")
    lines += _HISTORY
    if not gates["icl_gain_at_least_15_points"]:
        lines += ["**The in-context-learning gate is not met by this base** (see the table above).", ""]
    lines += [
        "## Use", "", "```python", "from peftbook import load_model", "model, tokenizer = load_model(\"tiny\")",
        "```", "", "Limits: a toy. It knows only its world's few hundred words, and 512 tokens of context.",
        "All numbers above are in `metrics.json` beside this file.", "",
    ]
    return "\n".join(lines)


def _curriculum_tokens_seen(curve: list[dict]) -> int:
    world = [row["tokens"] for row in curve if row.get("stage", "world") == "world"]
    return curve[-1]["tokens"] - (world[-1] if world else 0) if curve else 0


_STAGE_TEXT = {
    "induction": "60% passages of random world words with spans of themselves repeated later, 40% world corpus;",
    "polarity": "episodes that label single adjectives (30%), aspect clauses (15%) and reviews (20%) with a word "
                "pair drawn from 27 pairs in a random direction, 20% of their inputs exact repeats; 20% repeated "
                "word sequences, 15% world corpus;",
    "formats": "as `polarity`, with 70% of the episodes in two-line `Key: ...` formats like the task's template;",
    "reviews": "as `formats`, with more clauses (20%) and reviews (40%) and fewer single adjectives (10%), "
               "15% repeated word sequences.",
}
