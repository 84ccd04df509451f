"""The article's claims about PEFT, checked against what one benchmark run measured.

Results in, verdicts out: notebook 07 gathers what the benchmark and its extra experiments measured
in an ``Evidence``, and ``check_all(evidence)`` returns one ``{"id", "claim", "evidence", "verdict"}``
per claim (texts in ``CLAIMS``), each ``evidence`` quoting the numbers that decided its verdict.
What each claim reads:

1. the simulator at Llama 3 8B: bytes per parameter of full fine-tuning (``simulated_8b``);
2. peak memory and step time of every PEFT method against full fine-tuning (``results``);
3. few-shot scores at k = 1..4 over choices of the demonstrations and over their orders (``few_shot_grid``);
4. prompt tuning against few-shot: score, tokens per query and latency;
5. prefix tuning against prompt tuning: trainable parameters and score;
6. LLaMA-Adapter's loss curves over seeds from a zero gate against a random one (``gate_curves``);
7. LoRA against full fine-tuning: score;
8. forward time of merged LoRA, prefix tuning and LLaMA-Adapter against the base (``forward_ms``);
9. QLoRA against LoRA: score, and the bytes per weight of the 4-bit layers, measured (``nf4_bytes_per_weight``);
10. LoRA trained on a narrow against a diverse subset of the training data, per seed (``ablation``);
11. the singular values of full fine-tuning's weight change (``weight_change``);
12. LLaMA-Adapter on the top layers only against all layers, per seed (``top_layers``);
13. QLoRA's peak memory at 70B, from the simulator (``simulated_70b``).

How the verdicts are decided:

* **Noise.** Two methods' mean scores differ only when the difference is larger than two standard
  errors of a difference that has two sources (``noise``): the spread over seeds (the sample
  variance of each method's scores, over its number of seeds; few-shot: over its draws) and the noise
  of scoring ``n`` test examples (``2·p·(1−p)/n``). With one seed only the scoring noise is known,
  and the evidence says so.
* **Ceiling.** When both scores are at or above ``CEILING`` (0.98), no difference can show: "cannot
  tell: at the ceiling".
* A tie whose noise is small (at most ``RESOLUTION``, 5 points) is a measured tie: "A matches B"
  holds, "A beats B" does not. A tie whose noise is larger says nothing: "cannot tell: within seed noise".
* Memory counts as less below 95% of full fine-tuning's, step time as faster below 90% (slower
  above 110%), loss-curve measures as different beyond 10%, forward times beyond 5%, "about 16 GB" within 10%.

The verdicts (``tally`` counts the head, before any ":", "," or "("): "holds", "partly" (a claim of
two parts, one shown), "does not hold", "cannot tell" (at the ceiling, within seed noise, not at
this model size) and "not measured" (the run lacks a method or an experiment the claim needs).
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from peftbook.methods import METHODS, TRAINABLE_METHODS

CLAIMS = {
    1: "full fine-tuning needs about 16 GB per 1B parameters in half precision",
    2: "PEFT cuts training memory and speeds up training compared with full fine-tuning",
    3: "few-shot performance depends heavily on which examples are chosen",
    4: "prompt tuning beats few-shot and costs less at inference (no few-shot examples to process)",
    5: "prefix tuning (more trainable parameters) does better than prompt tuning",
    6: "LLaMA-Adapter's zero-init gating helps training stability vs random init",
    7: "LoRA matches, sometimes beats, full fine-tuning",
    8: "LoRA adds no inference cost once merged, unlike prefix tuning and LLaMA-Adapter",
    9: "QLoRA keeps LoRA's quality while cutting the frozen weights' memory about four-fold",
    10: "diverse, relevant, hard training examples matter",
    11: "the weight change of fine-tuning has a low intrinsic rank, which LoRA exploits",
    12: "adapting only the top layers does about as well as adapting all of them (LLaMA-Adapter)",
    13: "QLoRA fine-tunes a 65-70B model on a single 48 GB GPU",
}
PEFT_METHODS = tuple(m for m in TRAINABLE_METHODS if not METHODS[m].memory.trains_base_weights)  # claim 2's order
CEILING = 0.98  # scores at or above it cannot rank
RESOLUTION = 0.05  # a tie with noise at most this is a measured tie; with more, it says nothing
GPU_48GB = 48e9  # claim 13: the paper's single GPU (QLoRA, arXiv 2305.14314: 65B on one 48 GB GPU)


@dataclass
class Evidence:
    """What one run measured; a field left at None makes the claims that need it "not measured"."""

    results: list  # benchmark records (results.json): method, seed, value, error, peak_memory_bytes, ...
    metric: str  # the task's metric, e.g. "accuracy": named in the evidence strings
    n_test: int  # test examples behind each score: sets the scoring noise
    few_shot_grid: dict | None = None  # claim 3: k -> scores[choice][order] (choices of demos x their orders)
    few_shot_examples: int | None = None  # claim 3: test examples behind each score of the grid
    prompt_tokens_plain: float | None = None  # claim 4: mean tokens of a test query without demonstrations
    num_virtual_tokens: int | None = None  # claim 4: prompt tuning's, added to every query
    # claims 1, 2: "full bf16", "full mixed", "lora", "qlora" -> a simulated MemoryReport or its to_dict()
    simulated_8b: dict | None = None
    params_8b: int | None = None  # claim 1: parameters of the simulated 8B model
    gate_curves: dict | None = None  # claim 6: "zero", "random" -> loss curves, one per seed
    forward_ms: dict | None = None  # claim 8: "base", "lora merged", "prefix_tuning", "llama_adapter" -> ms
    ablation: dict | None = None  # claim 10: "narrow", "diverse" -> test scores of LoRA, one per seed
    ablation_sizes: dict | None = None  # claim 10: "narrow", "diverse" -> training examples in the subset
    nf4_bytes_per_weight: float | None = None  # claim 9: measured on the 4-bit layers of the QLoRA model
    weight_change: dict | None = None  # claim 11: {"rank", "energy": [per matrix], "random": [per matrix]}
    top_layers: dict | None = None  # claim 12: {"top": [scores], "all": [scores], "layers", "num_layers"}
    simulated_70b: object | None = None  # claim 13: QLoRA's simulated MemoryReport (or dict) at 70B
    simulated_70b_setting: str = "batch 1 × 512"  # claim 13: what was simulated
    simulated_70b_checkpointing: bool = False  # claim 13: whether that simulation had gradient checkpointing


# ---------------------------------------------------------------- scores and their noise

def values_of(results: list, method: str, key: str = "value") -> list[float]:
    """Every measured value of a method's successful runs: one per seed (few-shot: one per draw)."""
    runs = [r for r in results if r["method"] == method and not r.get("error")]
    if key == "value" and runs and all(r.get("values") for r in runs):
        return [v for r in runs for v in r["values"]]
    return [r[key] for r in runs if r.get(key) is not None]


def score(results: list, method: str, key: str = "value") -> float | None:
    """Mean of a field over the method's successful runs; None when there are none."""
    found = [r[key] for r in results if r["method"] == method and not r.get("error") and r.get(key) is not None]
    return sum(found) / len(found) if found else None


def scoring_noise(p: float, n: int) -> float:
    """Two standard errors of the difference of two proportions near ``p``, each scored on ``n`` examples.

    ``p`` is kept within [1/n, 1 - 1/n], so that a score of 0 or 1 still has a noise.
    """
    if n < 1:
        raise ValueError(f"n={n!r} test examples is not allowed; it must be at least 1")
    p = min(max(p, 1 / n), 1 - 1 / n)
    return 2 * math.sqrt(2 * p * (1 - p) / n)


def noise(a: list[float], b: list[float], n_test: int) -> float:
    """Two standard errors of ``mean(a) - mean(b)``: the seed variance of each (over its count) plus
    the scoring noise of ``n_test`` examples. A list of one value adds no seed variance."""
    seed_variance = sum(statistics.variance(v) / len(v) for v in (a, b) if len(v) > 1)
    p = (statistics.fmean(a) + statistics.fmean(b)) / 2
    return 2 * math.sqrt(seed_variance + (scoring_noise(p, n_test) / 2) ** 2)


@dataclass
class Comparison:
    """``a`` against ``b``: "higher", "lower", "tie" (within ``margin``) or "ceiling" (both at the top)."""

    outcome: str
    a: float
    b: float
    margin: float
    seeds: int  # the fewer of the two counts of values

    def text(self, a_name: str, b_name: str) -> str:
        source = "seed and scoring noise" if self.seeds > 1 else "scoring noise only: one seed"
        return (f"{a_name} {self.a:.3f} vs {b_name} {self.b:.3f}: {self.outcome} "
                f"(difference {self.a - self.b:+.3f}, noise ±{self.margin:.3f}, {source})")


def compare(a: list[float], b: list[float], n_test: int) -> Comparison:
    """Compare two lists of scores (one per seed) beyond their ``noise``."""
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    margin = noise(a, b, n_test)
    if min(mean_a, mean_b) >= CEILING:
        outcome = "ceiling"
    else:
        outcome = "higher" if mean_a - mean_b > margin else "lower" if mean_b - mean_a > margin else "tie"
    return Comparison(outcome, mean_a, mean_b, margin, min(len(a), len(b)))


def compare_methods(results: list, a: str, b: str, n_test: int) -> Comparison:
    return compare(values_of(results, a), values_of(results, b), n_test)


def relative(a: float, b: float, tolerance: float = 0.1, floor: float = 0.0) -> str:
    """'lower', 'higher' or 'tie': a against b, beyond a relative tolerance (of the larger magnitude)
    and beyond an absolute ``floor`` (two measures near zero are a tie)."""
    if abs(a - b) <= max(floor, tolerance * max(abs(a), abs(b))):
        return "tie"
    return "lower" if a < b else "higher"


def loss_stability(losses: list) -> dict:
    """How steadily a loss curve falls: its first loss, largest rise between steps, the spread of its
    step-to-step changes, and its final loss (mean of the last tenth)."""
    rises = [b - a for a, b in zip(losses, losses[1:])]
    tail = losses[-max(1, len(losses) // 10):]
    return {"initial_loss": losses[0], "largest_rise": max(rises, default=0.0),
            "step_change_std": statistics.pstdev(rises) if rises else 0.0, "final_loss": sum(tail) / len(tail)}


def curve_spread(curves: list) -> float | None:
    """Mean over steps of the standard deviation across curves (seeds); None for fewer than 2 curves."""
    if len(curves) < 2:
        return None
    steps = min(len(c) for c in curves)
    return statistics.fmean(statistics.stdev(c[i] for c in curves) for i in range(steps))


def gate_measures(curves: list) -> dict:
    """Claim 6's stability measures of a set of loss curves (one per seed), lower is steadier."""
    stats = [loss_stability(c) for c in curves]
    return {"largest_rise": statistics.fmean(s["largest_rise"] for s in stats),
            "step_change_std": statistics.fmean(s["step_change_std"] for s in stats),
            "seed_spread": curve_spread(curves), "final_loss": statistics.fmean(s["final_loss"] for s in stats)}


def headline_gate(results: list, methods=TRAINABLE_METHODS) -> dict:
    """The benchmark's gate: no trained method at or above ``CEILING``, and the best and worst trained
    methods at least 10 points and at least 3 seed standard deviations (the larger of the two) apart."""
    summaries = {}
    for method in methods:
        values = values_of(results, method)
        if values:
            summaries[method] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
    if len(summaries) < 2:
        return {"passes": False, "reasons": ["fewer than two trained methods in this run"]}
    best = max(summaries, key=lambda m: summaries[m][0])
    worst = min(summaries, key=lambda m: summaries[m][0])
    gap = summaries[best][0] - summaries[worst][0]
    sds = [summaries[m][1] for m in (best, worst)]
    sd = max(sds) if None not in sds else None
    reasons = []
    if summaries[best][0] >= CEILING:
        reasons.append(f"{best} scores {summaries[best][0]:.3f}, at or above the ceiling {CEILING}")
    if gap < 0.10:
        reasons.append(f"best and worst are {gap:.3f} apart, less than 0.10")
    if sd is None:
        reasons.append("one seed: no seed standard deviation to compare the gap with")
    elif gap < 3 * sd:
        reasons.append(f"the gap {gap:.3f} is less than 3 seed standard deviations (3 × {sd:.3f})")
    return {"passes": not reasons, "best": best, "best_mean": summaries[best][0], "worst": worst,
            "worst_mean": summaries[worst][0], "gap": gap, "seed_sd": sd, "reasons": reasons}


def describe_gate(gate: dict) -> str:
    """One sentence on ``headline_gate``'s outcome: how far apart the methods are, or why they don't rank."""
    if gate["passes"]:
        return (f"The methods separate: best {gate['best']} {gate['best_mean']:.3f}, worst {gate['worst']} "
                f"{gate['worst_mean']:.3f}, {gate['gap']:.3f} apart, {gate['gap'] / gate['seed_sd']:.1f} times the "
                f"larger of their seed standard deviations ({gate['seed_sd']:.3f}).")
    return "This run does not rank the methods: " + "; ".join(gate["reasons"]) + "."


# ---------------------------------------------------------------- verdict helpers

def _claim(number: int, evidence: str, verdict: str) -> dict:
    return {"id": number, "claim": CLAIMS[number], "evidence": evidence, "verdict": verdict}


def _missing(number: int, results: list, *methods: str) -> dict | None:
    """The "not measured" verdict when one of ``methods`` has no successful run, else None."""
    absent = [m for m in methods if not values_of(results, m)]
    return _claim(number, "-", f"not measured ({', '.join(absent)} not in this run)") if absent else None


def _not_measured(number: int, needs: str) -> dict:
    return _claim(number, "-", f"not measured (needs {needs})")


def _report(report, field: str):
    """A field of a simulated MemoryReport, or of its ``to_dict()``."""
    return report[field] if isinstance(report, Mapping) else getattr(report, field)


def _undecided(comparison: Comparison) -> str | None:
    """The "cannot tell" verdict of a comparison that cannot decide, else None."""
    if comparison.outcome == "ceiling":
        return f"cannot tell: at the ceiling (both at or above {CEILING})"
    if comparison.outcome == "tie" and comparison.margin > RESOLUTION:
        return f"cannot tell: within seed noise (±{comparison.margin:.3f})"
    return None


def better_verdict(comparison: Comparison) -> str:
    """The verdict of a claim "A does better than B"."""
    undecided = _undecided(comparison)
    if undecided:
        return undecided
    return {"higher": "holds", "tie": f"does not hold: a tie within ±{comparison.margin:.3f}",
            "lower": "does not hold: it scores lower"}[comparison.outcome]


def matches_verdict(comparison: Comparison) -> str:
    """The verdict of a claim "A does about as well as B"."""
    undecided = _undecided(comparison)
    if undecided:
        return undecided
    return {"higher": "holds: it scores higher", "tie": f"holds: a tie within ±{comparison.margin:.3f}",
            "lower": "does not hold: it scores lower"}[comparison.outcome]


# ---------------------------------------------------------------- the claims

def claim_1(evidence: Evidence) -> dict:
    from peftbook.memory.estimate import RULE_OF_THUMB_BYTES_PER_PARAM

    if evidence.simulated_8b is None or evidence.params_8b is None:
        return _not_measured(1, "the simulator at 8B")
    simulated, params = evidence.simulated_8b, evidence.params_8b
    states = {k: sum(_report(simulated[k], "by_category")[c] for c in ("weights", "gradients", "optimizer")) / params
              for k in ("full mixed", "full bf16")}
    peak = {k: _report(simulated[k], "peak_bytes") / params for k in states}
    text = (f"Llama 3 8B, batch 1 × 512, simulated: mixed precision keeps {states['full mixed']:.1f} B/param of "
            f"weights+gradients+AdamW state, peak {peak['full mixed']:.1f} GB per 1B; "
            f"pure bf16 {states['full bf16']:.1f} B/param, peak {peak['full bf16']:.1f} GB per 1B")
    if abs(states["full mixed"] - RULE_OF_THUMB_BYTES_PER_PARAM) > 0.1 * RULE_OF_THUMB_BYTES_PER_PARAM:
        return _claim(1, text, "does not hold")  # within 10% counts as "about"
    if peak["full mixed"] <= 1.1 * RULE_OF_THUMB_BYTES_PER_PARAM:
        return _claim(1, text, "holds")
    return _claim(1, text, "holds, as a floor: the peak adds the optimizer's temporaries and activations")


def claim_2(evidence: Evidence) -> dict:
    results = evidence.results
    peft = [m for m in PEFT_METHODS if score(results, m) is not None]
    if score(results, "full") is None or not peft:
        return _not_measured(2, "full and at least one PEFT method")
    memory = {m: score(results, m, "peak_memory_bytes") / score(results, "full", "peak_memory_bytes") for m in peft}
    full_step = score(results, "full", "step_time_s")  # None when the run was too short to time a step
    speed = {m: score(results, m, "step_time_s") / full_step if full_step else math.nan for m in peft}
    less = [m for m in peft if memory[m] < 0.95]
    faster = [m for m in peft if speed[m] < 0.9]
    slower = [m for m in peft if speed[m] > 1.1]
    text = ("; ".join(f"{m}: memory {memory[m]:.2f}x, step time {speed[m]:.2f}x of full" for m in peft)
            + " (less: below 0.95x; faster: below 0.90x)")
    if len(less) == len(peft) and len(faster) == len(peft):
        return _claim(2, text, "holds")
    if not less and evidence.simulated_8b is not None:
        lora_8b = (_report(evidence.simulated_8b["lora"], "peak_bytes")
                   / _report(evidence.simulated_8b["full bf16"], "peak_bytes"))
        if lora_8b < 0.95:
            return _claim(2, text + f"; 8B simulated: LoRA {lora_8b:.2f}x of full's peak",
                          "cannot tell: not at this model size (the simulator at 8B shows the memory cut)")
    if not less and not faster:
        return _claim(2, text, "does not hold")
    return _claim(2, text, f"partly: less memory for {len(less)}/{len(peft)}, faster for {len(faster)}/{len(peft)}"
                           + (f", slower for {len(slower)}" if slower else ""))


def claim_3(evidence: Evidence) -> dict:
    grid, n = evidence.few_shot_grid, evidence.few_shot_examples
    if not grid or n is None:
        return _not_measured(3, "few-shot scores over choices and orders of the demonstrations")
    parts, choice_ks, order_ks = [], [], []
    for k, table in sorted(grid.items(), key=lambda item: int(item[0])):
        means = [statistics.fmean(orders) for orders in table]
        choice = max(means) - min(means)
        orders = [max(o) - min(o) for o in table if len(o) > 1]
        order = statistics.fmean(orders) if orders else None
        limit = scoring_noise(statistics.fmean(means), n)
        choice_ks += [k] if choice > limit and len(table) > 1 else []
        order_ks += [k] if order is not None and order > limit else []
        parts.append(f"k={k}: range {choice:.3f} over {len(table)} choices"
                     + (f", {order:.3f} over orders" if order is not None else "") + f" (noise {limit:.3f})")
    text = "; ".join(parts) + f"; {evidence.metric} on {n} test examples"
    if choice_ks:
        also = f"; their order matters too (k={', '.join(map(str, order_ks))})" if order_ks else ""
        return _claim(3, text, f"holds at k={', '.join(map(str, choice_ks))}{also}")
    if order_ks:
        return _claim(3, text, "does not hold: which examples matters within the noise; their order matters "
                               f"(k={', '.join(map(str, order_ks))})")
    return _claim(3, text, "does not hold: every spread is within the scoring noise")


def claim_4(evidence: Evidence) -> dict:
    results, metric = evidence.results, evidence.metric
    absent = _missing(4, results, "prompt_tuning", "few_shot")
    if absent:
        return absent
    if evidence.prompt_tokens_plain is None or evidence.num_virtual_tokens is None:
        return _not_measured(4, "the tokens of a plain query and prompt tuning's num_virtual_tokens")
    quality = compare_methods(results, "prompt_tuning", "few_shot", evidence.n_test)
    tokens = evidence.prompt_tokens_plain + evidence.num_virtual_tokens
    latency = {m: score(results, m, "latency_s") for m in ("prompt_tuning", "few_shot")}
    cheaper = latency["prompt_tuning"] < latency["few_shot"]
    text = (f"{metric} {quality.text('prompt tuning', 'few-shot')}; tokens per query {tokens:.0f} vs "
            f"{score(results, 'few_shot', 'prompt_tokens'):.0f}; latency "
            f"{1000 * latency['prompt_tuning']:.1f} vs {1000 * latency['few_shot']:.1f} ms")
    better = better_verdict(quality)
    if better == "holds":
        return _claim(4, text, "holds" if cheaper else "partly: better, but not cheaper at inference")
    if not cheaper:
        return _claim(4, text, f"does not hold: not cheaper at inference, and quality {better}")
    if better.startswith("cannot tell"):
        return _claim(4, text, f"partly: cheaper at inference; quality {better}")
    return _claim(4, text, f"partly: cheaper at inference, but {better.removeprefix('does not hold: ')}")


def claim_5(evidence: Evidence) -> dict:
    results = evidence.results
    absent = _missing(5, results, "prefix_tuning", "prompt_tuning")
    if absent:
        return absent
    ratio = score(results, "prefix_tuning", "trainable_params") / score(results, "prompt_tuning", "trainable_params")
    quality = compare_methods(results, "prefix_tuning", "prompt_tuning", evidence.n_test)
    text = f"prefix trains {ratio:.1f}x the parameters; {evidence.metric} {quality.text('prefix', 'prompt')}"
    if ratio <= 1:
        return _claim(5, text, "does not hold: prefix tuning does not train more here")
    return _claim(5, text, better_verdict(quality))


def claim_6(evidence: Evidence) -> dict:
    curves = evidence.gate_curves
    if not curves or not curves.get("zero") or not curves.get("random"):
        return _not_measured(6, "LLaMA-Adapter's loss curves from a zero and a random gate")
    zero, rand = gate_measures(curves["zero"]), gate_measures(curves["random"])
    keys = [k for k in ("largest_rise", "step_change_std", "seed_spread") if zero[k] is not None and rand[k] is not None]
    text = ", ".join(f"{k.replace('_', ' ')} {zero[k]:.3f} (zero) vs {rand[k]:.3f} (random)"
                     for k in keys + ["final_loss"])
    text += f"; {min(len(curves['zero']), len(curves['random']))} seed(s) each; lower is steadier"
    outcomes = {k: relative(zero[k], rand[k], floor=1e-3) for k in keys}
    steadier = [k.replace("_", " ") for k, o in outcomes.items() if o == "lower"]
    shakier = [k.replace("_", " ") for k, o in outcomes.items() if o == "higher"]
    if steadier and not shakier:
        return _claim(6, text, "holds")
    if steadier:
        return _claim(6, text, f"partly: steadier by {', '.join(steadier)}, shakier by {', '.join(shakier)}")
    if shakier:
        return _claim(6, text, f"does not hold: the random gate is steadier by {', '.join(shakier)}")
    return _claim(6, text, "does not hold: as steady either way (every measure within 10%)")


def claim_7(evidence: Evidence) -> dict:
    results = evidence.results
    absent = _missing(7, results, "lora", "full")
    if absent:
        return absent
    quality = compare_methods(results, "lora", "full", evidence.n_test)
    return _claim(7, f"{evidence.metric} {quality.text('LoRA', 'full')}", matches_verdict(quality))


def claim_8(evidence: Evidence) -> dict:
    if evidence.forward_ms is None:
        return _not_measured(8, "the forward times of the base, merged LoRA, prefix tuning and LLaMA-Adapter")
    ratio = {name: ms / evidence.forward_ms["base"] for name, ms in evidence.forward_ms.items()}
    text = ", ".join(f"{name} {ratio[name]:.2f}x" for name in ratio if name != "base") + " the base forward time"
    merged_free = ratio["lora merged"] <= 1.05  # within 5% of the base: timing noise
    others_cost = [ratio[m] > 1.05 for m in ("prefix_tuning", "llama_adapter")]
    if not merged_free:
        return _claim(8, text, "does not hold: merged LoRA is slower than the base")
    if all(others_cost):
        return _claim(8, text, "holds")
    if not any(others_cost):
        return _claim(8, text, "cannot tell: not at this model size "
                               "(the extra attention of prefix tuning and LLaMA-Adapter is within 5% here)")
    return _claim(8, text, "partly: merged LoRA is free, but only one of the other two costs more than 5%")


def claim_9(evidence: Evidence) -> dict:
    results = evidence.results
    absent = _missing(9, results, "qlora", "lora")
    if absent:
        return absent
    if evidence.nf4_bytes_per_weight is None:
        return _not_measured(9, "the bytes per weight of the 4-bit layers")
    quality = compare_methods(results, "qlora", "lora", evidence.n_test)
    fold = 2 / evidence.nf4_bytes_per_weight  # against the same weights in bf16
    text = (f"{evidence.metric} {quality.text('QLoRA', 'LoRA')}; the 4-bit layers hold "
            f"{evidence.nf4_bytes_per_weight:.3f} bytes per weight (measured), {fold:.1f}x less than bf16")
    memory = "holds" if fold >= 3.5 else f"does not hold: {fold:.1f}-fold"
    kept = matches_verdict(quality)
    if kept.startswith("does not hold"):
        return _claim(9, text, "does not hold: QLoRA scores lower" + ("" if memory == "holds" else f"; {memory}"))
    if memory != "holds":
        return _claim(9, text, f"partly: quality kept, but the memory cut is {fold:.1f}-fold")
    if kept.startswith("cannot tell"):
        return _claim(9, text, f"partly: the four-fold memory cut holds; quality {kept}")
    return _claim(9, text, "holds")


def claim_10(evidence: Evidence) -> dict:
    if not evidence.ablation or evidence.ablation_sizes is None:
        return _not_measured(10, "LoRA trained on the narrow and the diverse subset")
    quality = compare(evidence.ablation["diverse"], evidence.ablation["narrow"], evidence.n_test)
    sizes = evidence.ablation_sizes
    text = (f"LoRA on {sizes['diverse']} diverse vs {sizes['narrow']} narrow (shortest) examples: "
            f"{evidence.metric} {quality.text('diverse', 'narrow')}")
    return _claim(10, text, better_verdict(quality))


def claim_11(evidence: Evidence) -> dict:
    change = evidence.weight_change
    if not change:
        return _not_measured(11, "the singular values of a full fine-tune's weight change")
    rank = change["rank"]
    energy, baseline = statistics.fmean(change["energy"]), statistics.fmean(change["random"])
    text = (f"full fine-tuning, {len(change['energy'])} weight matrices: the top {rank} singular directions of "
            f"the change hold {energy:.0%} of its energy (mean), {baseline:.0%} for random matrices of the same shapes")
    if energy >= 2 * baseline and energy >= 0.5:
        return _claim(11, text, "holds")
    if energy >= 1.5 * baseline:
        return _claim(11, text, "partly: more concentrated than random, but less than half in the top directions"
                      if energy < 0.5 else "partly: concentrated, but less than twice a random matrix's share")
    return _claim(11, text, "does not hold: the change is spread like a random matrix's")


def claim_12(evidence: Evidence) -> dict:
    runs = evidence.top_layers
    if not runs or not runs.get("top") or not runs.get("all"):
        return _not_measured(12, "LLaMA-Adapter on the top layers and on all layers")
    quality = compare(runs["top"], runs["all"], evidence.n_test)
    text = (f"LLaMA-Adapter on the top {runs['layers']} of {runs['num_layers']} layers vs all: "
            f"{evidence.metric} {quality.text('top', 'all')}")
    return _claim(12, text, matches_verdict(quality))


def claim_13(evidence: Evidence) -> dict:
    if evidence.simulated_70b is None:
        return _not_measured(13, "the simulator at 70B")
    peak = _report(evidence.simulated_70b, "peak_bytes")
    text = (f"Llama 3 70B, QLoRA, {evidence.simulated_70b_setting}, simulated (not measured on a GPU): "
            f"peak {peak / 1e9:.1f} GB against {GPU_48GB / 1e9:.0f} GB")
    if peak <= GPU_48GB:
        return _claim(13, text, "holds (simulated)")
    if not evidence.simulated_70b_checkpointing:
        return _claim(13, text, "cannot tell (simulated): over 48 GB without gradient checkpointing, which the paper "
                                "used and this simulation left off")
    return _claim(13, text, "does not hold (simulated)")


CHECKS = (claim_1, claim_2, claim_3, claim_4, claim_5, claim_6, claim_7, claim_8, claim_9, claim_10, claim_11,
          claim_12, claim_13)


def check_all(evidence: Evidence) -> list[dict]:
    """The verdicts of every claim, in ``CLAIMS``' order."""
    return [check(evidence) for check in CHECKS]


def tally(claims: list[dict]) -> Counter:
    """How many claims got each verdict, counted by its head: "holds", "partly", "cannot tell", ..."""
    return Counter(c["verdict"].split(":")[0].split(",")[0].split("(")[0].strip() for c in claims)
