"""The article's ten claims about PEFT, checked against what one benchmark run measured.

Results in, verdicts out: notebook 07 gathers what the benchmark and its extra experiments measured
in an ``Evidence``, and ``check_all(evidence)`` returns one ``{"id", "claim", "measured", "verdict"}``
per claim (texts in ``CLAIMS``), each ``measured`` quoting the numbers that decided its verdict.
What each claim reads:

1. the simulator at Llama 3 8B: bytes per parameter of full fine-tuning (``simulated_8b``);
2. peak memory and step time of every PEFT method against full fine-tuning (``results``);
3. the spread of the few-shot score over draws of the demonstrations;
4. prompt tuning against few-shot: score, tokens per query and latency;
5. prefix tuning against prompt tuning: trainable parameters and score;
6. LLaMA-Adapter's loss curve from a zero gate against a random one (``gate_stats``);
7. LoRA against full fine-tuning: score;
8. forward time of merged LoRA, prefix tuning and LLaMA-Adapter against the base (``forward_ms``);
9. QLoRA against LoRA: score, and the memory of the weights here and at 8B;
10. LoRA trained on a narrow against a diverse subset of the training data (``ablation``).

How the verdicts are decided:

* a score counts as higher or lower than another only when the difference is larger than the noise
  of scoring ``n`` test examples: two standard errors of a difference of two proportions,
  ``2·sqrt(2·p·(1−p)/n)`` (``scoring_noise``); within that, it is a tie (``compare``);
* losses count as lower or higher beyond 2% (``relative``), forward times beyond 5%, and "about
  16 GB" is within 10%.

The verdicts (``tally`` counts the head, before any ":", "," or "("):

* "holds": this run shows the claim;
* "partly": it shows some of the claim, and the verdict says which part;
* "does not hold": this run contradicts the claim, or shows a tie where the claim says "better";
* "not on this model": the tiny base cannot show the effect (but the simulator at 8B does, for claim 2);
* "not measured": the run lacks a method or an experiment the claim needs.
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
}
PEFT_METHODS = tuple(m for m in TRAINABLE_METHODS if not METHODS[m].memory.trains_base_weights)  # claim 2's order


@dataclass
class Evidence:
    """What one run measured; a field left at None makes the claims that need it "not measured"."""

    results: list  # benchmark records (results.json): method, seed, value, error, peak_memory_bytes, ...
    metric: str  # the task's metric, e.g. "accuracy": named in the measured strings
    n_test: int  # test examples behind each score: sets the scoring noise
    few_shot_k: int | None = None  # demonstrations per few-shot prompt; None: bench.FEW_SHOT_K
    few_shot_draws: int | None = None  # draws of demonstrations; None: as many as the few-shot records hold
    prompt_tokens_plain: float | None = None  # claim 4: mean tokens of a test query without demonstrations
    num_virtual_tokens: int | None = None  # claim 4: prompt tuning's, added to every query
    # claims 1, 2, 9: "full bf16", "full mixed", "lora", "qlora" -> a simulated MemoryReport or its to_dict()
    simulated_8b: dict | None = None
    params_8b: int | None = None  # claim 1: parameters of the simulated 8B model
    gate_stats: dict | None = None  # claim 6: "zero", "random" -> loss_stability(losses)
    forward_ms: dict | None = None  # claim 8: "base", "lora merged", "prefix_tuning", "llama_adapter", ... -> ms
    ablation: dict | None = None  # claim 10: "narrow", "diverse" -> test score of LoRA trained on that subset
    ablation_sizes: dict | None = None  # claim 10: "narrow", "diverse" -> training examples in the subset
    model_dtype: str | None = None  # claim 9: dtype of the base weights, e.g. "float32"


def score(results: list, method: str, key: str = "value") -> float | None:
    """Mean over seeds of a field of the method's successful runs; None when there are none."""
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


def compare(a: float, b: float, n: int) -> str:
    """'higher', 'lower' or 'tie': a against b, beyond the scoring noise of ``n`` examples."""
    margin = scoring_noise((a + b) / 2, n)
    return "higher" if a - b > margin else "lower" if b - a > margin else "tie"


def relative(a: float, b: float, tolerance: float = 0.02) -> str:
    """'lower', 'higher' or 'tie': a against b, beyond a relative tolerance."""
    return "lower" if a < b * (1 - tolerance) else "higher" if a > b * (1 + tolerance) else "tie"


def loss_stability(losses: list) -> dict:
    """How steadily a loss curve falls: its first loss, largest rise between steps, the spread of its
    step-to-step changes, and its final loss (mean of the last tenth)."""
    rises = [b - a for a, b in zip(losses, losses[1:])]
    tail = losses[-max(1, len(losses) // 10):]
    return {"initial_loss": losses[0], "largest_rise": max(rises, default=0.0),
            "step_change_std": statistics.pstdev(rises) if rises else 0.0, "final_loss": sum(tail) / len(tail)}


def _claim(number: int, measured: str, verdict: str) -> dict:
    return {"id": number, "claim": CLAIMS[number], "measured": measured, "verdict": verdict}


def _first_run(results: list, method: str) -> dict | None:
    return next((r for r in results if r["method"] == method and not r.get("error")), None)


def _missing(number: int, results: list, *methods: str) -> dict | None:
    """The "not measured" verdict when one of ``methods`` has no successful run, else None."""
    absent = [m for m in methods if score(results, m) is None]
    return _claim(number, "-", f"not measured ({', '.join(absent)} not in this run)") if absent else None


def _not_measured(number: int, needs: str) -> dict:
    return _claim(number, "-", f"not measured (needs {needs})")


def _report(report, field: str):
    """A field of a simulated MemoryReport, or of its ``to_dict()``."""
    return report[field] if isinstance(report, Mapping) else getattr(report, field)


# the verdict of a claim "A does better than B", by ``compare(A, B)``
HIGHER_HOLDS = {"higher": "holds", "tie": "does not hold: a tie within the scoring noise", "lower": "does not hold"}


def claim_1(evidence: Evidence) -> dict:
    from peftbook.memory.estimate import RULE_OF_THUMB_BYTES_PER_PARAM

    if evidence.simulated_8b is None or evidence.params_8b is None:
        return _not_measured(1, "the simulator at 8B")
    simulated, params = evidence.simulated_8b, evidence.params_8b
    states = {k: sum(_report(simulated[k], "by_category")[c] for c in ("weights", "gradients", "optimizer")) / params
              for k in ("full mixed", "full bf16")}
    peak = {k: _report(simulated[k], "peak_bytes") / params for k in states}
    measured = (f"Llama 3 8B, batch 1 × 512, simulated: mixed precision keeps {states['full mixed']:.1f} B/param of "
                f"weights+gradients+AdamW state, peak {peak['full mixed']:.1f} GB per 1B; "
                f"pure bf16 {states['full bf16']:.1f} B/param, peak {peak['full bf16']:.1f} GB per 1B")
    if abs(states["full mixed"] - RULE_OF_THUMB_BYTES_PER_PARAM) > 0.1 * RULE_OF_THUMB_BYTES_PER_PARAM:
        return _claim(1, measured, "does not hold")  # within 10% counts as "about"
    if peak["full mixed"] <= 1.1 * RULE_OF_THUMB_BYTES_PER_PARAM:
        return _claim(1, measured, "holds")
    return _claim(1, measured, "holds, as a floor: the peak adds the optimizer's temporaries and activations")


def claim_2(evidence: Evidence) -> dict:
    results = evidence.results
    peft = [m for m in PEFT_METHODS if score(results, m) is not None]
    if score(results, "full") is None or not peft:
        return _not_measured(2, "full and at least one PEFT method")
    memory = {m: score(results, m, "peak_memory_bytes") / score(results, "full", "peak_memory_bytes") for m in peft}
    full_step = score(results, "full", "step_time_s")  # None when the run was too short to time a step
    speed = {m: score(results, m, "step_time_s") / full_step if full_step is not None else math.nan for m in peft}
    less, faster = [m for m in peft if memory[m] < 1], [m for m in peft if speed[m] < 1]
    measured = "; ".join(f"{m}: memory {memory[m]:.2f}x, step time {speed[m]:.2f}x of full" for m in peft)
    if len(less) == len(peft) and len(faster) == len(peft):
        return _claim(2, measured, "holds")
    if not less and evidence.simulated_8b is not None:
        lora_8b = (_report(evidence.simulated_8b["lora"], "peak_bytes")
                   / _report(evidence.simulated_8b["full bf16"], "peak_bytes"))
        if lora_8b < 1:
            return _claim(2, measured + f"; 8B simulated: LoRA {lora_8b:.2f}x of full", "not on this model")
    return _claim(2, measured, f"partly: less memory for {len(less)}/{len(peft)}, faster for {len(faster)}/{len(peft)}")


def claim_3(evidence: Evidence) -> dict:
    runs = [r for r in evidence.results if r["method"] == "few_shot" and not r.get("error")]
    draws = evidence.few_shot_draws
    if draws is None and runs:
        draws = min(len(r["values"]) for r in runs)
    if not runs or draws < 2:
        return _not_measured(3, "few_shot with FEW_SHOT_DRAWS >= 2")
    k = evidence.few_shot_k
    if k is None:  # the registry's default number of demonstrations
        k = METHODS["few_shot"].defaults["shots"]
    values = [v for r in runs for v in r["values"]]
    spread, mean = max(values) - min(values), sum(values) / len(values)
    noise = scoring_noise(mean, evidence.n_test)
    measured = (f"{len(values)} draws of k={k}: {evidence.metric} {min(values):.3f} to {max(values):.3f} "
                f"(range {spread:.3f}; scoring noise {noise:.3f})")
    return _claim(3, measured, "holds" if spread > noise else "does not hold: the spread is within the scoring noise")


def claim_4(evidence: Evidence) -> dict:
    results, metric = evidence.results, evidence.metric
    absent = _missing(4, results, "prompt_tuning", "few_shot")
    if absent:
        return absent
    if evidence.prompt_tokens_plain is None or evidence.num_virtual_tokens is None:
        return _not_measured(4, "the tokens of a plain query and prompt tuning's num_virtual_tokens")
    prompt, few = score(results, "prompt_tuning"), score(results, "few_shot")
    quality = compare(prompt, few, evidence.n_test)
    tokens = evidence.prompt_tokens_plain + evidence.num_virtual_tokens
    latency = {m: score(results, m, "latency_s") for m in ("prompt_tuning", "few_shot")}
    cheaper = latency["prompt_tuning"] < latency["few_shot"]
    measured = (f"{metric} {prompt:.3f} vs few-shot {few:.3f} ({quality}); tokens per query {tokens:.0f} vs "
                f"{score(results, 'few_shot', 'prompt_tokens'):.0f}; latency "
                f"{1000 * latency['prompt_tuning']:.1f} vs {1000 * latency['few_shot']:.1f} ms")
    verdict = ("holds" if quality == "higher" and cheaper else "does not hold" if quality != "higher" and not cheaper
               else f"partly: {'cheaper' if cheaper else 'not cheaper'} at inference, {quality} {metric}")
    return _claim(4, measured, verdict)


def claim_5(evidence: Evidence) -> dict:
    results = evidence.results
    absent = _missing(5, results, "prefix_tuning", "prompt_tuning")
    if absent:
        return absent
    ratio = score(results, "prefix_tuning", "trainable_params") / score(results, "prompt_tuning", "trainable_params")
    prefix, prompt = score(results, "prefix_tuning"), score(results, "prompt_tuning")
    quality = compare(prefix, prompt, evidence.n_test)
    measured = f"prefix trains {ratio:.1f}x the parameters; {evidence.metric} {prefix:.3f} vs {prompt:.3f} ({quality})"
    if ratio <= 1:
        return _claim(5, measured, "does not hold: prefix tuning does not train more here")
    return _claim(5, measured, HIGHER_HOLDS[quality])


def claim_6(evidence: Evidence) -> dict:
    if evidence.gate_stats is None:
        return _not_measured(6, "the zero-gate and random-gate LLaMA-Adapter runs")
    zero, rand = evidence.gate_stats["zero"], evidence.gate_stats["random"]
    measured = ", ".join(f"{k.replace('_', ' ')} {zero[k]:.3f} (zero) vs {rand[k]:.3f} (random)"
                         for k in ("initial_loss", "step_change_std", "final_loss"))
    outcomes = [relative(zero[k], rand[k]) for k in ("initial_loss", "step_change_std")]  # lower is better
    if "lower" in outcomes:
        return _claim(6, measured, "holds" if "higher" not in outcomes else "partly")
    return _claim(6, measured, "does not hold" if "higher" in outcomes else "does not hold: no difference beyond 2%")


def claim_7(evidence: Evidence) -> dict:
    results = evidence.results
    absent = _missing(7, results, "lora", "full")
    if absent:
        return absent
    lora, full = score(results, "lora"), score(results, "full")
    quality = compare(lora, full, evidence.n_test)
    measured = (f"{evidence.metric} LoRA {lora:.3f} vs full {full:.3f} "
                f"(noise {scoring_noise(full, evidence.n_test):.3f})")
    verdict = {"higher": "holds: LoRA beats full fine-tuning here", "tie": "holds: a tie within the scoring noise",
               "lower": "does not hold: LoRA scores lower"}[quality]
    return _claim(7, measured, verdict)


def claim_8(evidence: Evidence) -> dict:
    if evidence.forward_ms is None:
        return _not_measured(8, "the forward times of the base, merged LoRA, prefix tuning and LLaMA-Adapter")
    ratio = {name: ms / evidence.forward_ms["base"] for name, ms in evidence.forward_ms.items()}
    measured = ", ".join(f"{name} {ratio[name]:.2f}x" for name in ratio if name != "base") + " the base forward time"
    merged_free = ratio["lora merged"] <= 1.05  # within 5% of the base: timing noise
    others_cost = [ratio[m] > 1.05 for m in ("prefix_tuning", "llama_adapter")]
    if not merged_free:
        return _claim(8, measured, "does not hold: merged LoRA is slower than the base")
    if all(others_cost):
        return _claim(8, measured, "holds")
    if not any(others_cost):
        return _claim(8, measured, "not on this model: "
                      "the extra attention of prefix tuning and LLaMA-Adapter is within 5% here")
    return _claim(8, measured, "partly: merged LoRA is free, but only one of the other two costs more than 5%")


def claim_9(evidence: Evidence) -> dict:
    from peftbook.memory.estimate import NF4_BYTES_PER_PARAM

    results = evidence.results
    absent = _missing(9, results, "qlora", "lora")
    if absent:
        return absent
    if evidence.simulated_8b is None:
        return _not_measured(9, "the simulator at 8B")
    qlora, lora = score(results, "qlora"), score(results, "lora")
    quality = compare(qlora, lora, evidence.n_test)
    weights = {m: _first_run(results, m)["memory_by_category"]["weights"] for m in ("lora", "qlora")}
    here = weights["lora"] / weights["qlora"]
    at_8b = (_report(evidence.simulated_8b["lora"], "by_category")["weights"]
             / _report(evidence.simulated_8b["qlora"], "by_category")["weights"])
    base = f" (a {evidence.model_dtype} base)" if evidence.model_dtype else ""
    measured = (f"{evidence.metric} QLoRA {qlora:.3f} vs LoRA {lora:.3f} ({quality}); a 4-bit layer is "
                f"{2 / NF4_BYTES_PER_PARAM:.1f}x smaller than in bf16; all weights {here:.1f}x smaller here{base}, "
                f"{at_8b:.1f}x at 8B vs bf16 (simulated)")
    if quality == "lower":
        return _claim(9, measured, "does not hold: QLoRA scores lower")
    if at_8b >= 3:
        return _claim(9, measured, "holds")
    return _claim(9, measured, "partly: quality kept; at 8B the embeddings and output head stay 16-bit, "
                               f"so all weights shrink {at_8b:.1f}x")


def claim_10(evidence: Evidence) -> dict:
    if evidence.ablation is None or evidence.ablation_sizes is None:
        return _not_measured(10, "LoRA trained on the narrow and the diverse subset")
    diverse, narrow = evidence.ablation["diverse"], evidence.ablation["narrow"]
    quality = compare(diverse, narrow, evidence.n_test)
    measured = (f"LoRA on {evidence.ablation_sizes['diverse']} diverse examples: {evidence.metric} {diverse:.3f}; on "
                f"{evidence.ablation_sizes['narrow']} narrow (shortest) ones: {narrow:.3f} ({quality})")
    return _claim(10, measured, HIGHER_HOLDS[quality])


CHECKS = (claim_1, claim_2, claim_3, claim_4, claim_5, claim_6, claim_7, claim_8, claim_9, claim_10)


def check_all(evidence: Evidence) -> list[dict]:
    """The verdicts of the ten claims, in the article's order."""
    return [check(evidence) for check in CHECKS]


def tally(claims: list[dict]) -> Counter:
    """How many claims got each verdict, counted by its head: "holds", "partly", "not measured", ..."""
    return Counter(c["verdict"].split(":")[0].split(",")[0].split("(")[0].strip() for c in claims)
