"""The model card (data/tiny/README.md) of the tiny base, written from its measured metrics."""
from __future__ import annotations


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


_NOT_MET = [
    "", "## What did not work (yet)", "",
    "The in-context-learning gate (8 shots >= 15 points above zero-shot) is **not met** by this base: "
    "zero-shot is already high, because the base reads `Sentiment:` after a review as a request for a "
    "polarity word, and the shots add nothing. It reads the format from the shots (a new key pair works) but "
    "it follows its prior, not the shots' mapping: with flipped labels in 8 event episodes it still "
    "answered by the prior (0% agreement with the flipped labels, 40 probes). Three recipes were tried, each "
    "a full run on 2 shared CPU cores (see the docstring of `peftbook/tiny/world.py`):", "",
    "1. one fixed key pair per episode mapping: 8-shot 89% under keys seen in pretraining, but 53% (one label "
    "for every review) under new keys such as `Review:/Sentiment:`, at any k;",
    "2. keys drawn from pools and made-up words, 15% of polarity episodes flipped (this base, stopped at "
    "1,400 steps): the format generalises, zero-shot ~90%, flat curve;",
    "3. as 2 with half the polarity episodes flipped, so that only the shots could tell the direction: at "
    "chance at every k through 2,600 steps.", "",
    "What this base lacks underneath: **induction**. A sequence of 30 random corpus words repeated once "
    "costs it 10.23 nats per token the first time and 10.30 the second (a model with induction heads "
    "copies the repeat almost free), and the label of a review repeated verbatim 3+ examples earlier is "
    "right 53% of the time. Four more recipes continued this base's pretraining (1,200-1,500 steps, "
    "2.5-3M tokens each, 2 CPU cores; probes on 64 validation reviews, label pairs positive/negative, "
    "good/bad, and blue/red, high/low that carry no polarity):", "",
    "4. half the documents polarity episodes with label pairs drawn from 25 word pairs in either direction, "
    "30% exact repeats: the prior fades (0-shot positive/negative 91% -> 66%) and the shots still add "
    "nothing (8-shot 52%); a repeat's label 57%;",
    "5. as 4 plus 30% documents of repeated random word sequences: still no induction (4.69 -> 4.62 nats);",
    "6. 60% repeated random word sequences, learning rate 2e-3: induction forms between steps 1,000 and "
    "1,500 (4.80 -> 0.48 nats), sentiment few-shot stays at chance;",
    "7. 6 continued with 70% polarity episodes (40% exact repeats): induction stays (0.42 nats), a repeat's "
    "label 67%, a new review's label at chance, every label pair at chance at 0, 4 and 8 shots.", "",
    "So copying tokens can be taught in ~1,500 steps, but matching an input to an earlier one across the "
    "identical `Sentiment:` separators (exact repeats: 67%), let alone by polarity, did not appear. Next "
    "steps: put repeated sequences in the corpus from step 0 (this base never formed induction on world "
    "text alone), then a curriculum of input -> label episodes that starts with exact repeats and short "
    "inputs; zero-shot stays low only with label words that carry no prior in the task format.", "",
]


def render(m: dict) -> str:
    build, pre = m["build"], m["build"]["pretrain"]
    timing, corpus = m["timing"], m["corpus"]
    curve = m["few_shot"]["sentiment"]
    calibrated = m["few_shot"]["sentiment_calibrated"]
    ft, gates = m["finetune"], m["gates"]
    lines = [
        "---", "license: mit", "library_name: transformers", "pipeline_tag: text-generation", "---", "",
        "# peftbook-tiny", "",
        f"A {m['parameters'] / 1e6:.2f}M-parameter Llama-architecture causal LM that knows a small synthetic world "
        "(restaurants, people, reviews) but not peftbook's two tasks, so that few-shot prompting and every PEFT method "
        "show real effects on a laptop CPU, offline. Made entirely by peftbook's own code: "
        "`python -m peftbook tiny build` regenerates the corpus, the task files, the tokenizer and this model "
        "from a seed (here {seed}).".format(seed=build["seed"]), "",
        "## How it was made", "",
        f"* **Corpus**: {build['num_documents']:,} generated passages ({build['train_tokens']:,} tokens in "
        f"{pre['seq_len']}-token blocks): restaurant descriptions in prose, stories of visits with a verdict "
        "(\"... In the end Sara felt negative.\"), ordinary uses of the label words, and bursty *episodes* of other "
        "mappings (opposites, capitals, categories, weather/events -> good/bad, happy/sad, positive/negative, "
        "remarks -> a tone word) in eleven formats, their `Key:` names drawn from pools or made up. Never the "
        "`Review: ... Sentiment:` template, never the "
        "`name[...] , food[...]` meaning-representation format. See `peftbook/tiny/world.py`.",
        f"* **Tokenizer**: byte-level BPE (`tokenizers`), {m['vocab_size']:,} tokens, trained on the corpus; "
        "round-trips text.",
        f"* **Model**: `LlamaForCausalLM`, {pre['num_layers']} layers, hidden {pre['hidden_size']}, MLP "
        f"{pre['intermediate_size']}, {pre['num_heads']} query heads / {pre['num_kv_heads']} key-value heads "
        f"(grouped-query attention), tied embeddings, context {pre['seq_len']}.",
        f"* **Pretraining**: {pre['steps']} steps of {pre['batch_size']} x {pre['seq_len']} tokens, AdamW "
        f"(lr {pre['lr']}, {pre['warmup']} warm-up steps, then inverse-square-root decay, weight decay "
        f"{pre['weight_decay']}), {pre['threads']} CPU threads, seed {pre['seed']}. The build took "
        f"{build['build_seconds'] / 60:.0f} minutes on 2 shared CPU cores (other jobs ran beside it).", "",
        "## Measured", "",
        f"* Held-out perplexity of the corpus: **{corpus['heldout_perplexity']:.2f}** "
        f"({corpus['heldout_tokens']:,} tokens from a stream training never saw).",
        f"* Load + one forward pass on CPU: {timing['load_and_forward_s']:.2f} s "
        f"(load {timing['load_s']:.2f} s, forward {timing['forward_s']:.3f} s; Python imports not counted).", "",
        f"**In-context learning** on `sentiment` (first 200 test reviews, shots drawn from train, "
        f"{len(curve[-1]['values'])} draws; label chosen by the log-likelihood of ` positive` vs ` negative`):", "",
        "| shots | accuracy (mean ± std) | calibrated |", "|---:|---:|---:|",
    ]
    cal = {row["shots"]: row for row in calibrated}
    for row in curve:
        c = cal.get(row["shots"])
        lines.append(f"| {row['shots']} | {_pct(row['mean'])} ± {100 * row['std']:.1f} | "
                     + (f"{_pct(c['mean'])} ± {100 * c['std']:.1f}" if c else "") + " |")
    d2t0 = m["zero_shot"]["data2text"]
    lines += [
        "", f"8 shots minus zero-shot: **{gates['icl_8shot_minus_0shot_points']:+.1f} points** "
        f"(gate: >= 15: {'met' if gates['icl_gain_at_least_15_points'] else 'NOT met'}); rises with shots: "
        f"{'yes' if gates['icl_rises_with_shots'] else 'no'}.", "",
        "**New but learnable tasks**:", "",
        f"* `data2text` zero-shot (first 200 test MRs, greedy): slot accuracy {_pct(d2t0['slot_accuracy'])}, "
        f"BLEU {d2t0['bleu']:.1f}, ROUGE-L {d2t0['rougeL']:.3f} (the base takes the unknown format for one of its "
        "episodes and answers a label word such as `no`).",
        f"* Full fine-tuning, {ft['sentiment']['steps']} steps of batch {ft['sentiment']['batch_size']} "
        f"(`peftbook/tiny/finetune.py`): `sentiment` (lr {ft['sentiment']['lr']}) test accuracy "
        f"**{_pct(ft['sentiment']['accuracy'])}** (all 1,000) in {ft['sentiment']['seconds']:.0f} s; `data2text` "
        f"(lr {ft['data2text']['lr']}, chosen on validation) slot accuracy "
        f"**{_pct(ft['data2text']['slot_accuracy'])}**, BLEU {ft['data2text']['bleu']:.1f}, ROUGE-L "
        f"{ft['data2text']['rougeL']:.3f} (first 200 test MRs) in {ft['data2text']['seconds']:.0f} s.", "",
        "| gate | result |", "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in gates.items()]
    lines += [
        "", "## Pretraining curve", "",
        "Held-out loss and the ICL probe (64 *validation* reviews, 2 draws) during pretraining:", "",
        "| step | tokens | held-out loss | 0-shot | 4-shot | 8-shot |", "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in m["pretraining_curve"]:
        icl = row.get("icl_accuracy", {})
        lines.append(f"| {row['step']} | {row['tokens']:,} | {row['heldout_loss']:.3f} | "
                     + " | ".join(_pct(icl[k]) if k in icl else "" for k in ("0", "4", "8")) + " |")
    if not gates["icl_gain_at_least_15_points"]:
        lines += _NOT_MET
    lines += [
        "", "## Use", "", "```python", "from peftbook import load_model", "model, tokenizer = load_model(\"tiny\")",
        "```", "", "Limits: a toy. It knows only its world's few hundred words, and 512 tokens of context.",
        "All numbers above are in `metrics.json` beside this file.", "",
    ]
    return "\n".join(lines)
