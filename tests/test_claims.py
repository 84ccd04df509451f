"""The claims' verdicts from synthetic benchmark records: every verdict of every claim, no model."""
from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest

from peftbook.claims import (CEILING, CHECKS, CLAIMS, RESOLUTION, Evidence, better_verdict, check_all, claim_1,
                             claim_2, claim_3, claim_4, claim_5, claim_6, claim_7, claim_8, claim_9, claim_10,
                             claim_11, claim_12, claim_13, compare, curve_spread, describe_gate, gate_measures, headline_gate,
                             loss_stability, matches_verdict, noise, relative, score, scoring_noise, tally,
                             values_of)
from peftbook.memory.measure import MemoryReport

pytestmark = pytest.mark.unit

N_TEST = 2000  # scoring noise near p = 0.5: 2 * sqrt(2 * 0.25 / 2000) = 0.032, below RESOLUTION
PARAMS_8B = 1_000_000_000


def run(method, value=0.5, seed=0, **fields):
    """One successful benchmark record."""
    return {"method": method, "seed": seed, "value": value, "peak_memory_bytes": 1000, "step_time_s": 1.0,
            "latency_s": 0.01, "trainable_params": 100, "memory_by_category": {"weights": 400}, **fields}


def seeds(method, *values, **fields):
    """One record per seed with these values."""
    return [run(method, value, seed=i, **fields) for i, value in enumerate(values)]


def simulated(full_mixed=(4, 4, 8), peak_mixed=20.0, lora_peak=0.5):
    """MemoryReports at 8B: bytes per parameter of weights, gradients and optimizer state, peaks in GB per 1B."""
    def report(peak, weights, gradients=0, optimizer=0):
        by_category = {"weights": weights * PARAMS_8B, "gradients": gradients * PARAMS_8B,
                       "optimizer": optimizer * PARAMS_8B}
        return MemoryReport(device="cuda", peak_bytes=int(peak * PARAMS_8B), by_category=by_category)
    return {"full mixed": report(peak_mixed, *full_mixed), "full bf16": report(10.0, 2, 2, 4),
            "lora": report(10.0 * lora_peak, 2), "qlora": report(3.0, 0.5)}


STEADY = [[3.0 - 0.01 * i for i in range(100)] for _ in range(3)]  # three identical smooth curves
SHAKY = [[3.0 - 0.01 * i + (0.3 if i % 7 == 0 else 0) + 0.05 * s for i in range(100)] for s in range(3)]


def evidence(results=(), **fields):
    defaults = dict(metric="accuracy", n_test=N_TEST, few_shot_grid={1: [[0.5], [0.52]]}, few_shot_examples=N_TEST,
                    prompt_tokens_plain=40.0, num_virtual_tokens=8, simulated_8b=simulated(), params_8b=PARAMS_8B,
                    gate_curves={"zero": STEADY, "random": SHAKY},
                    forward_ms={"base": 10.0, "lora merged": 10.0, "prefix_tuning": 12.0, "llama_adapter": 13.0},
                    ablation={"narrow": [0.5, 0.5], "diverse": [0.5, 0.5]}, ablation_sizes={"narrow": 64, "diverse": 64},
                    nf4_bytes_per_weight=0.52, weight_change={"rank": 8, "energy": [0.8, 0.7], "random": [0.2, 0.2]},
                    top_layers={"top": [0.6, 0.6], "all": [0.6, 0.6], "layers": 2, "num_layers": 4},
                    simulated_70b=MemoryReport(device="cuda", peak_bytes=int(40e9), by_category={}))
    return Evidence(results=list(results), **{**defaults, **fields})


def check(claim, expected_verdict, *numbers):
    """The verdict, and the numbers fed in quoted by the evidence string."""
    assert claim["verdict"] == expected_verdict, claim
    for number in numbers:
        assert number in claim["evidence"], (number, claim["evidence"])


# ---------------------------------------------------------------- scores and noise

def test_values_and_score_use_successful_runs_only():
    results = [run("lora", 0.6), run("lora", 0.8, seed=1), run("lora", 0.0, error="out of memory"),
               run("lora", latency_s=None, seed=2)]
    assert values_of(results, "lora") == [0.6, 0.8, 0.5]
    assert score(results, "lora") == pytest.approx((0.6 + 0.8 + 0.5) / 3)
    assert score(results, "lora", "latency_s") == pytest.approx(0.01)
    assert score(results, "full") is None and values_of(results, "full") == []


def test_values_of_few_shot_are_its_draws():
    results = [run("few_shot", values=[0.4, 0.6]), run("few_shot", seed=1, values=[0.5])]
    assert values_of(results, "few_shot") == [0.4, 0.6, 0.5]


@pytest.mark.parametrize("p, n, expected", [
    (0.5, 500, 2 * math.sqrt(2 * 0.25 / 500)),
    (0.0, 100, 2 * math.sqrt(2 * 0.01 * 0.99 / 100)),  # p clamps to 1/n: a perfect score still has a noise
    (1.0, 100, 2 * math.sqrt(2 * 0.01 * 0.99 / 100)),  # and to 1 - 1/n
    (0.3, 1, 0.0),  # one example: nothing to clamp into
])
def test_scoring_noise(p, n, expected):
    assert scoring_noise(p, n) == pytest.approx(expected)


def test_scoring_noise_names_a_bad_count():
    with pytest.raises(ValueError, match="n=0"):
        scoring_noise(0.5, 0)


def test_noise_adds_seed_variance_to_scoring_noise():
    a, b = [0.5, 0.6, 0.7], [0.4, 0.4]
    expected = 2 * math.sqrt(statistics.variance(a) / 3 + 0 + (scoring_noise(0.5, 500) / 2) ** 2)
    assert noise(a, b, 500) == pytest.approx(expected)
    assert noise([0.5], [0.5], 500) == pytest.approx(scoring_noise(0.5, 500))  # one seed each: scoring only
    assert noise(a, b, 500) > noise([0.6], [0.4], 500)


@pytest.mark.parametrize("a, b, expected", [
    ([0.60], [0.50], "higher"), ([0.50], [0.60], "lower"), ([0.52], [0.50], "tie"),
    ([0.70, 0.50, 0.60], [0.50, 0.50], "tie"),  # the same 0.1 gap, but the seeds spread: noise
    ([0.99, 1.0], [0.985], "ceiling"), ([0.99], [0.5], "higher"),
])
def test_compare(a, b, expected):
    assert compare(a, b, N_TEST).outcome == expected


def test_comparison_text_says_where_the_noise_comes_from():
    assert "scoring noise only: one seed" in compare([0.6], [0.5], N_TEST).text("a", "b")
    text = compare([0.6, 0.62], [0.5, 0.52], N_TEST).text("a", "b")
    assert text.startswith("a 0.610 vs b 0.510: higher (difference +0.100") and "seed and scoring noise" in text


@pytest.mark.parametrize("a, b, better, matches", [
    ([0.6], [0.5], "holds", "holds: it scores higher"),
    ([0.5], [0.6], "does not hold: it scores lower", "does not hold: it scores lower"),
    ([0.51], [0.5], "does not hold: a tie within ±0.032", "holds: a tie within ±0.032"),
    ([0.99], [1.0], f"cannot tell: at the ceiling (both at or above {CEILING})",
     f"cannot tell: at the ceiling (both at or above {CEILING})"),
    ([0.4, 0.6], [0.5, 0.5], "cannot tell: within seed noise (±0.202)", "cannot tell: within seed noise (±0.202)"),
])
def test_better_and_matches_verdicts(a, b, better, matches):
    comparison = compare(a, b, N_TEST)
    assert better_verdict(comparison) == better
    assert matches_verdict(comparison) == matches


def test_resolution_separates_a_measured_tie_from_noise():
    small = compare([0.5], [0.5], N_TEST)
    large = compare([0.5], [0.5], 100)
    assert small.margin <= RESOLUTION < large.margin
    assert better_verdict(small).startswith("does not hold") and better_verdict(large).startswith("cannot tell")


@pytest.mark.parametrize("a, b, tolerance, expected", [
    (0.97, 1.0, 0.02, "lower"), (1.03, 1.0, 0.02, "higher"), (1.01, 1.0, 0.02, "tie"), (0.95, 1.0, 0.1, "tie"),
    (-0.2, -0.1, 0.1, "lower"), (1e-17, 2e-17, 0.1, "lower")])
def test_relative(a, b, tolerance, expected):
    assert relative(a, b, tolerance) == expected


def test_relative_floor_makes_near_zero_a_tie():
    assert relative(1e-17, 2e-17, floor=1e-3) == "tie" and relative(0.0, 0.01, floor=1e-3) == "lower"


def test_loss_stability():
    stats = loss_stability([4.0, 3.0, 3.5, 2.0] + [1.0] * 16)
    assert stats["initial_loss"] == 4.0
    assert stats["largest_rise"] == pytest.approx(0.5)
    assert stats["final_loss"] == 1.0  # the mean of the last tenth: two steps
    assert stats["step_change_std"] > 0
    one_step = {"initial_loss": 2.5, "largest_rise": 0.0, "step_change_std": 0.0, "final_loss": 2.5}
    assert loss_stability([2.5]) == one_step


def test_curve_spread_and_gate_measures():
    assert curve_spread([[1.0, 2.0]]) is None
    assert curve_spread([[1.0, 2.0], [3.0, 2.0]]) == pytest.approx((statistics.stdev([1, 3]) + 0) / 2)
    assert gate_measures(STEADY)["seed_spread"] == 0 and gate_measures(STEADY)["largest_rise"] < 0
    assert gate_measures(SHAKY)["seed_spread"] > 0 and gate_measures(SHAKY)["largest_rise"] > 0.2


def test_tally_counts_verdict_heads():
    verdicts = ["holds", "holds: a tie within ±0.03", "holds, as a floor: ...", "partly", "partly: less memory",
                "not measured (lora not in this run)", "does not hold", "cannot tell: at the ceiling (both ...)",
                "holds (simulated)"]
    assert tally([{"verdict": v} for v in verdicts]) == Counter(
        {"holds": 4, "partly": 2, "not measured": 1, "does not hold": 1, "cannot tell": 1})


# ---------------------------------------------------------------- the headline gate

def test_headline_gate_passes_when_methods_separate():
    results = seeds("prompt_tuning", 0.58, 0.60, 0.59) + seeds("full", 0.75, 0.78, 0.76) + seeds("lora", 0.65, 0.64)
    gate = headline_gate(results)
    assert gate["passes"] and gate["reasons"] == []
    assert (gate["best"], gate["worst"]) == ("full", "prompt_tuning")
    assert gate["gap"] == pytest.approx(0.17333, abs=1e-4)
    assert describe_gate(gate).startswith("The methods separate: best full 0.763, worst prompt_tuning 0.590, 0.173 "
                                          "apart, 11.3 times")


@pytest.mark.parametrize("results, reason", [
    (seeds("lora", 0.99, 0.99) + seeds("full", 0.80, 0.80), "at or above the ceiling"),
    (seeds("lora", 0.60, 0.62) + seeds("full", 0.65, 0.66), "less than 0.10"),
    (seeds("lora", 0.50, 0.90) + seeds("full", 0.30, 0.32), "less than 3 seed standard deviations"),
    (seeds("lora", 0.50) + seeds("full", 0.80), "one seed"),
    (seeds("lora", 0.50), "fewer than two trained methods"),
])
def test_headline_gate_says_why_it_fails(results, reason):
    gate = headline_gate(results)
    assert not gate["passes"] and any(reason in r for r in gate["reasons"]), gate
    assert describe_gate(gate).startswith("This run does not rank the methods: ") and reason in describe_gate(gate)


def test_headline_gate_ignores_few_shot_and_failed_runs():
    results = seeds("few_shot", 0.1) + seeds("lora", 0.5, 0.5) + seeds("full", 0.7, 0.7) + [run("qlora", error="x")]
    assert headline_gate(results)["worst"] == "lora"


# ---------------------------------------------------------------- the claims, verdict by verdict

@pytest.mark.parametrize("memory, expected, numbers", [
    ({}, "holds, as a floor: the peak adds the optimizer's temporaries and activations",
     ["16.0 B/param", "peak 20.0 GB per 1B", "pure bf16 8.0 B/param", "peak 10.0 GB"]),
    ({"peak_mixed": 17.0}, "holds", ["16.0 B/param", "peak 17.0 GB per 1B"]),
    ({"full_mixed": (2, 2, 4)}, "does not hold", ["8.0 B/param"]),
])
def test_claim_1(memory, expected, numbers):
    check(claim_1(evidence(simulated_8b=simulated(**memory))), expected, *numbers)


def test_claim_1_accepts_to_dict_reports_and_needs_the_simulator():
    reports = {name: report.to_dict() for name, report in simulated().items()}
    assert claim_1(evidence(simulated_8b=reports)) == claim_1(evidence())
    assert claim_1(evidence(simulated_8b=None))["verdict"] == "not measured (needs the simulator at 8B)"


def memory_runs(peft_memory, peft_step=0.5):
    return [run("full", peak_memory_bytes=1000, step_time_s=1.0),
            run("lora", peak_memory_bytes=peft_memory, step_time_s=peft_step),
            run("prompt_tuning", peak_memory_bytes=peft_memory, step_time_s=peft_step)]


@pytest.mark.parametrize("results, lora_peak, expected, numbers", [
    (memory_runs(500), 0.5, "holds", ["lora: memory 0.50x, step time 0.50x of full"]),
    (memory_runs(500, 0.95), 0.5, "partly: less memory for 2/2, faster for 0/2", ["step time 0.95x"]),
    (memory_runs(500, 1.5), 0.5, "partly: less memory for 2/2, faster for 0/2, slower for 2", []),
    (memory_runs(980), 0.5, "cannot tell: not at this model size (the simulator at 8B shows the memory cut)",
     ["8B simulated: LoRA 0.50x of full's peak"]),
    (memory_runs(980, 0.95), 1.0, "does not hold", ["memory 0.98x"]),
])
def test_claim_2(results, lora_peak, expected, numbers):
    check(claim_2(evidence(results, simulated_8b=simulated(lora_peak=lora_peak))), expected, *numbers)


@pytest.mark.parametrize("results", [[run("lora")], [run("full")], [run("full"), run("lora", error="boom")]])
def test_claim_2_not_measured(results):
    assert claim_2(evidence(results))["verdict"] == "not measured (needs full and at least one PEFT method)"


@pytest.mark.parametrize("grid, expected", [
    ({1: [[0.4], [0.6]], 2: [[0.5, 0.5], [0.5, 0.5]]}, "holds at k=1"),
    ({2: [[0.4, 0.6], [0.6, 0.8]]}, "holds at k=2; their order matters too (k=2)"),
    ({2: [[0.4, 0.6], [0.41, 0.61]]}, "does not hold: which examples matters within the noise; their order "
                                       "matters (k=2)"),
    ({1: [[0.5], [0.51]], 3: [[0.5, 0.51], [0.5, 0.5]]}, "does not hold: every spread is within the scoring noise"),
])
def test_claim_3(grid, expected):
    check(claim_3(evidence(few_shot_grid=grid)), expected, "over 2 choices", f"on {N_TEST} test examples")


def test_claim_3_not_measured():
    for fields in ({"few_shot_grid": None}, {"few_shot_examples": None}, {"few_shot_grid": {}}):
        assert claim_3(evidence(**fields))["verdict"].startswith("not measured (needs few-shot scores")


def few_shot_vs_prompt(prompt_values, prompt_latency=0.005):
    return (seeds("few_shot", 0.5, values=[0.5, 0.5], latency_s=0.01, prompt_tokens=272.0)
            + seeds("prompt_tuning", *prompt_values, latency_s=prompt_latency))


@pytest.mark.parametrize("results, expected", [
    (few_shot_vs_prompt([0.7]), "holds"),
    (few_shot_vs_prompt([0.7], 0.02), "partly: better, but not cheaper at inference"),
    (few_shot_vs_prompt([0.4], 0.02), "does not hold: not cheaper at inference, and quality does not hold: it scores "
                                      "lower"),
    (few_shot_vs_prompt([0.3, 0.7]), "partly: cheaper at inference; quality cannot tell: within seed noise (±0.401)"),
    (few_shot_vs_prompt([0.4]), "partly: cheaper at inference, but it scores lower"),
])
def test_claim_4(results, expected):
    check(claim_4(evidence(results)), expected, "tokens per query 48 vs 272", "latency")


@pytest.mark.parametrize("results, fields, expected", [
    ([run("prompt_tuning")], {}, "not measured (few_shot not in this run)"),
    (few_shot_vs_prompt([0.7]), {"num_virtual_tokens": None}, "not measured (needs the tokens of a plain query and "
                                                              "prompt tuning's num_virtual_tokens)"),
])
def test_claim_4_not_measured(results, fields, expected):
    assert claim_4(evidence(results, **fields))["verdict"] == expected


@pytest.mark.parametrize("prefix_params, prefix_values, expected", [
    (200, [0.7], "holds"), (200, [0.51], "does not hold: a tie within ±0.032"),
    (200, [0.3], "does not hold: it scores lower"), (100, [0.7], "does not hold: prefix tuning does not train more here"),
    (200, [0.3, 0.9], "cannot tell: within seed noise (±0.601)"),
])
def test_claim_5(prefix_params, prefix_values, expected):
    results = seeds("prompt_tuning", 0.5) + seeds("prefix_tuning", *prefix_values, trainable_params=prefix_params)
    check(claim_5(evidence(results)), expected, f"prefix trains {prefix_params / 100:.1f}x the parameters")


def test_claim_5_not_measured():
    assert claim_5(evidence([run("prompt_tuning")]))["verdict"] == "not measured (prefix_tuning not in this run)"


def spike_curves(spike, spread, count=3):
    """Curves that fall steadily with one rise of ``spike`` and per-seed offsets ``spread`` apart."""
    return [[3.0 - 0.01 * i + (spike if i == 50 else 0) + spread * s for i in range(100)] for s in range(count)]


@pytest.mark.parametrize("zero, random_gate, expected", [
    (STEADY, SHAKY, "holds"),
    (SHAKY, STEADY, "does not hold: the random gate is steadier by largest rise, step change std, seed spread"),
    (spike_curves(0.5, 0.0), spike_curves(0.1, 0.3), "partly: steadier by seed spread, shakier by largest rise, step "
                                                      "change std"),
    (STEADY, STEADY, "does not hold: as steady either way (every measure within 10%)"),
])
def test_claim_6(zero, random_gate, expected):
    check(claim_6(evidence(gate_curves={"zero": zero, "random": random_gate})), expected, "3 seed(s) each",
          "final loss")


def test_claim_6_one_seed_drops_the_seed_spread():
    claim = claim_6(evidence(gate_curves={"zero": STEADY[:1], "random": SHAKY[:1]}))
    assert claim["verdict"] == "holds" and "seed spread" not in claim["evidence"]


def test_claim_6_does_not_use_the_initial_loss():
    zero = [[1.0] + c[1:] for c in STEADY]  # a far lower first loss changes nothing
    assert claim_6(evidence(gate_curves={"zero": zero, "random": STEADY}))["verdict"].startswith("does not hold")


@pytest.mark.parametrize("lora, full, expected", [
    ([0.7], [0.5], "holds: it scores higher"), ([0.51], [0.5], "holds: a tie within ±0.032"),
    ([0.3], [0.5], "does not hold: it scores lower"), ([1.0], [0.99], f"cannot tell: at the ceiling (both at or "
                                                                     f"above {CEILING})"),
    ([0.4, 0.6], [0.5, 0.5], "cannot tell: within seed noise (±0.202)"),
])
def test_claim_7(lora, full, expected):
    check(claim_7(evidence(seeds("lora", *lora) + seeds("full", *full))), expected, "LoRA", "vs full")


def test_claim_7_not_measured():
    assert claim_7(evidence([run("lora")]))["verdict"] == "not measured (full not in this run)"


@pytest.mark.parametrize("merged, prefix, adapter, expected", [
    (10.0, 12.0, 13.0, "holds"), (11.0, 12.0, 13.0, "does not hold: merged LoRA is slower than the base"),
    (10.0, 10.2, 10.3, "cannot tell: not at this model size (the extra attention of prefix tuning and LLaMA-Adapter "
                       "is within 5% here)"),
    (10.0, 12.0, 10.3, "partly: merged LoRA is free, but only one of the other two costs more than 5%"),
])
def test_claim_8(merged, prefix, adapter, expected):
    forward = {"base": 10.0, "lora merged": merged, "prefix_tuning": prefix, "llama_adapter": adapter}
    check(claim_8(evidence(forward_ms=forward)), expected, f"lora merged {merged / 10:.2f}x")


@pytest.mark.parametrize("qlora, bytes_per_weight, expected", [
    ([0.5], 0.52, "holds"), ([0.7], 0.52, "holds"),
    ([0.3], 0.52, "does not hold: QLoRA scores lower"),
    ([0.3], 1.0, "does not hold: QLoRA scores lower; does not hold: 2.0-fold"),
    ([0.5], 1.0, "partly: quality kept, but the memory cut is 2.0-fold"),
    ([0.3, 0.7], 0.52, "partly: the four-fold memory cut holds; quality cannot tell: within seed noise (±0.401)"),
])
def test_claim_9(qlora, bytes_per_weight, expected):
    claim = claim_9(evidence(seeds("lora", 0.5) + seeds("qlora", *qlora), nf4_bytes_per_weight=bytes_per_weight))
    check(claim, expected, f"{bytes_per_weight:.3f} bytes per weight (measured), {2 / bytes_per_weight:.1f}x")


@pytest.mark.parametrize("results, fields, expected", [
    ([run("lora")], {}, "not measured (qlora not in this run)"),
    (seeds("lora", 0.5) + seeds("qlora", 0.5), {"nf4_bytes_per_weight": None},
     "not measured (needs the bytes per weight of the 4-bit layers)"),
])
def test_claim_9_not_measured(results, fields, expected):
    assert claim_9(evidence(results, **fields))["verdict"] == expected


@pytest.mark.parametrize("diverse, expected", [
    ([0.8, 0.8], "holds"), ([0.51, 0.51], "does not hold: a tie within ±0.032"),
    ([0.3, 0.3], "does not hold: it scores lower"), ([0.2, 0.8], "cannot tell: within seed noise (±0.601)"),
])
def test_claim_10(diverse, expected):
    claim = claim_10(evidence(ablation={"narrow": [0.5, 0.5], "diverse": diverse},
                              ablation_sizes={"narrow": 64, "diverse": 60}))
    check(claim, expected, "LoRA on 60 diverse vs 64 narrow (shortest) examples")


@pytest.mark.parametrize("energy, random_share, expected", [
    ([0.8, 0.7], [0.2, 0.2], "holds"),
    ([0.4, 0.4], [0.2, 0.2], "partly: more concentrated than random, but less than half in the top directions"),
    ([0.7, 0.7], [0.4, 0.4], "partly: concentrated, but less than twice a random matrix's share"),
    ([0.25, 0.25], [0.2, 0.2], "does not hold: the change is spread like a random matrix's"),
])
def test_claim_11(energy, random_share, expected):
    claim = claim_11(evidence(weight_change={"rank": 8, "energy": energy, "random": random_share}))
    check(claim, expected, "2 weight matrices", "top 8 singular directions")


@pytest.mark.parametrize("top, expected", [
    ([0.6, 0.6], "holds: a tie within ±0.031"), ([0.7, 0.7], "holds: it scores higher"),
    ([0.4, 0.4], "does not hold: it scores lower"), ([0.2, 1.0], "cannot tell: within seed noise (±0.801)"),
])
def test_claim_12(top, expected):
    claim = claim_12(evidence(top_layers={"top": top, "all": [0.6, 0.6], "layers": 2, "num_layers": 4}))
    check(claim, expected, "top 2 of 4 layers")


@pytest.mark.parametrize("peak_gb, checkpointing, expected", [
    (40, False, "holds (simulated)"), (50, True, "does not hold (simulated)"),
    (50, False, "cannot tell (simulated): over 48 GB without gradient checkpointing, which the paper used and this "
                "simulation left off")])
def test_claim_13(peak_gb, checkpointing, expected):
    report = MemoryReport(device="cuda", peak_bytes=int(peak_gb * 1e9), by_category={})
    check(claim_13(evidence(simulated_70b=report, simulated_70b_checkpointing=checkpointing)), expected, f"peak {peak_gb:.1f} GB against 48 GB", "simulated")
    assert claim_13(evidence(simulated_70b=report.to_dict())) == claim_13(evidence(simulated_70b=report))


@pytest.mark.parametrize("check_claim, field", [
    (claim_6, "gate_curves"), (claim_8, "forward_ms"), (claim_10, "ablation"), (claim_10, "ablation_sizes"),
    (claim_11, "weight_change"), (claim_12, "top_layers"), (claim_13, "simulated_70b")])
def test_missing_experiment_is_not_measured(check_claim, field):
    claim = check_claim(evidence(**{field: None}))
    assert claim["evidence"] == "-" and claim["verdict"].startswith("not measured (needs ")


def test_check_all_in_order_with_ids_and_texts():
    results = (seeds("few_shot", 0.5, values=[0.5, 0.6], prompt_tokens=272.0) + seeds("prompt_tuning", 0.5)
               + seeds("prefix_tuning", 0.5, trainable_params=200) + seeds("lora", 0.5) + seeds("qlora", 0.5)
               + seeds("full", 0.5, peak_memory_bytes=2000, step_time_s=2.0))
    claims = check_all(evidence(results))
    assert [c["id"] for c in claims] == sorted(CLAIMS) == list(range(1, len(CHECKS) + 1))
    assert [c["claim"] for c in claims] == [CLAIMS[i] for i in sorted(CLAIMS)]
    assert all(c["evidence"] != "-" for c in claims)  # everything was measured
    assert sum(tally(claims).values()) == len(CLAIMS)
    assert check_all(evidence())[1]["verdict"].startswith("not measured")
