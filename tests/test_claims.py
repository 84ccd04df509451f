"""The claims' verdicts from synthetic benchmark records: every branch of every claim, no model."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from peftbook.claims import (CLAIMS, Evidence, check_all, claim_1, claim_2, claim_3, claim_4, claim_5, claim_6,
                             claim_7, claim_8, claim_9, claim_10, compare, loss_stability, relative, score,
                             scoring_noise, tally)
from peftbook.memory.measure import MemoryReport

pytestmark = pytest.mark.unit

N_TEST = 500  # scoring noise near p = 0.5: 2 * sqrt(2 * 0.25 / 500) = 0.063
PARAMS_8B = 1_000_000_000


def run(method, value=0.5, **fields):
    """One successful benchmark record."""
    return {"method": method, "seed": 0, "value": value, "peak_memory_bytes": 1000, "step_time_s": 1.0,
            "latency_s": 0.01, "trainable_params": 100, "memory_by_category": {"weights": 400}, **fields}


def simulated(full_mixed=(4, 4, 8), peak_mixed=20.0, lora_peak=0.5, qlora_weights=0.25):
    """MemoryReports at 8B: bytes per parameter of weights, gradients and optimizer state, peaks in GB per 1B."""
    def report(peak, weights, gradients=0, optimizer=0):
        by_category = {"weights": weights * PARAMS_8B, "gradients": gradients * PARAMS_8B,
                       "optimizer": optimizer * PARAMS_8B}
        return MemoryReport(device="cuda", peak_bytes=int(peak * PARAMS_8B), by_category=by_category)
    return {"full mixed": report(peak_mixed, *full_mixed), "full bf16": report(10.0, 2, 2, 4),
            "lora": report(10.0 * lora_peak, 2), "qlora": report(3.0, 2 * qlora_weights)}


def evidence(results=(), **fields):
    defaults = dict(metric="accuracy", n_test=N_TEST, few_shot_k=8, few_shot_draws=5, prompt_tokens_plain=40.0,
                    num_virtual_tokens=8, simulated_8b=simulated(), params_8b=PARAMS_8B,
                    gate_stats={"zero": loss_stability([2.0, 1.0]), "random": loss_stability([4.0, 1.0])},
                    forward_ms={"base": 10.0, "lora merged": 10.0, "prefix_tuning": 12.0, "llama_adapter": 13.0},
                    ablation={"narrow": 0.5, "diverse": 0.5}, ablation_sizes={"narrow": 64, "diverse": 64},
                    model_dtype="float32")
    return Evidence(results=list(results), **{**defaults, **fields})


# helpers

def test_score_means_successful_runs_only():
    results = [run("lora", 0.6), run("lora", 0.8, seed=1), run("lora", 0.0, error="out of memory"),
               run("lora", latency_s=None)]
    assert score(results, "lora") == pytest.approx((0.6 + 0.8 + 0.5) / 3)
    assert score(results, "lora", "latency_s") == pytest.approx(0.01)
    assert score(results, "full") is None


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


@pytest.mark.parametrize("a, b, n, expected", [
    (0.60, 0.50, 500, "higher"), (0.50, 0.60, 500, "lower"), (0.53, 0.50, 500, "tie"),
    (0.60, 0.50, 50, "tie"),  # the same gap is noise on 50 examples
    (1.0, 0.99, 100, "tie"),  # p = 0.995 clamps to 0.99
    (1.0, 0.99, 10_000, "higher"),
])
def test_compare(a, b, n, expected):
    assert compare(a, b, n) == expected


@pytest.mark.parametrize("a, b, tolerance, expected", [
    (0.97, 1.0, 0.02, "lower"), (1.03, 1.0, 0.02, "higher"), (1.01, 1.0, 0.02, "tie"), (0.9, 1.0, 0.2, "tie")])
def test_relative(a, b, tolerance, expected):
    assert relative(a, b, tolerance) == expected


def test_loss_stability():
    stats = loss_stability([4.0, 3.0, 3.5, 2.0] + [1.0] * 16)
    assert stats["initial_loss"] == 4.0
    assert stats["largest_rise"] == pytest.approx(0.5)
    assert stats["final_loss"] == 1.0  # the mean of the last tenth: two steps
    assert stats["step_change_std"] > 0
    one_step = {"initial_loss": 2.5, "largest_rise": 0.0, "step_change_std": 0.0, "final_loss": 2.5}
    assert loss_stability([2.5]) == one_step


def test_tally_counts_verdict_heads():
    verdicts = ["holds", "holds: a tie within the scoring noise", "holds, as a floor: ...", "partly",
                "partly: less memory for 2/5", "not measured (lora not in this run)", "does not hold"]
    assert tally([{"verdict": v} for v in verdicts]) == Counter(
        {"holds": 3, "partly": 2, "not measured": 1, "does not hold": 1})


# the claims, branch by branch

def check(claim, expected_verdict, *numbers):
    """The verdict, and the numbers fed in quoted by the measured string."""
    assert claim["verdict"] == expected_verdict, claim
    for number in numbers:
        assert number in claim["measured"], (number, claim["measured"])


@pytest.mark.parametrize("memory, expected, numbers", [
    ({}, "holds, as a floor: the peak adds the optimizer's temporaries and activations",
     ["16.0 B/param", "peak 20.0 GB per 1B", "pure bf16 8.0 B/param", "peak 10.0 GB"]),
    ({"peak_mixed": 17.0}, "holds", ["16.0 B/param", "peak 17.0 GB per 1B"]),
    ({"full_mixed": (2, 2, 4)}, "does not hold", ["8.0 B/param"]),
])
def test_claim_1(memory, expected, numbers):
    claim = claim_1(evidence(simulated_8b=simulated(**memory)))
    check(claim, expected, *numbers)


def test_claim_1_accepts_to_dict_reports():
    reports = {name: report.to_dict() for name, report in simulated().items()}
    assert claim_1(evidence(simulated_8b=reports)) == claim_1(evidence())


def test_claim_1_not_measured_without_the_simulator():
    assert claim_1(evidence(simulated_8b=None))["verdict"] == "not measured (needs the simulator at 8B)"


def memory_runs(peft_memory, peft_step=0.5, full_step=1.0):
    return [run("full", peak_memory_bytes=1000, step_time_s=full_step),
            run("lora", peak_memory_bytes=peft_memory, step_time_s=peft_step),
            run("prefix_tuning", peak_memory_bytes=500, step_time_s=peft_step)]


@pytest.mark.parametrize("results, lora_peak, expected, numbers", [
    (memory_runs(400), 0.5, "holds", ["lora: memory 0.40x, step time 0.50x of full", "prefix_tuning: memory 0.50x"]),
    (memory_runs(1200), 0.5, "partly: less memory for 1/2, faster for 2/2", ["lora: memory 1.20x"]),
    (memory_runs(400, full_step=None), 0.5, "partly: less memory for 2/2, faster for 0/2", ["step time nanx"]),
    ([run("full"), run("lora", peak_memory_bytes=1100, step_time_s=2.0)], 0.5, "not on this model",
     ["lora: memory 1.10x, step time 2.00x", "8B simulated: LoRA 0.50x of full"]),
    ([run("full"), run("lora", peak_memory_bytes=1100)], 1.2, "partly: less memory for 0/1, faster for 0/1",
     ["memory 1.10x"]),
])
def test_claim_2(results, lora_peak, expected, numbers):
    check(claim_2(evidence(results, simulated_8b=simulated(lora_peak=lora_peak))), expected, *numbers)


@pytest.mark.parametrize("results", [[run("lora")], [run("full")], [run("full"), run("lora", error="boom")]])
def test_claim_2_not_measured(results):
    assert claim_2(evidence(results))["verdict"] == "not measured (needs full and at least one PEFT method)"


def test_claim_2_without_the_simulator_stays_partly():
    results = [run("full"), run("lora", peak_memory_bytes=1100)]
    assert claim_2(evidence(results, simulated_8b=None))["verdict"] == "partly: less memory for 0/1, faster for 0/1"


@pytest.mark.parametrize("values, expected, numbers", [
    ([0.5, 0.7, 0.6], "holds", ["3 draws of k=8", "accuracy 0.500 to 0.700", "range 0.200", "scoring noise 0.062"]),
    ([0.60, 0.62], "does not hold: the spread is within the scoring noise", ["range 0.020"]),
    # p = 1 clamps to 1 - 1/500
    ([1.0, 1.0], "does not hold: the spread is within the scoring noise", ["1.000 to 1.000", "scoring noise 0.006"]),
])
def test_claim_3(values, expected, numbers):
    check(claim_3(evidence([run("few_shot", values=values)], few_shot_draws=len(values))), expected, *numbers)


@pytest.mark.parametrize("results, draws", [
    ([run("lora")], 5), ([run("few_shot", values=[0.5])], 1), ([run("few_shot", values=[0.5], error="boom")], 5),
    ([run("few_shot", values=[0.5])], None)])  # without FEW_SHOT_DRAWS: the draws the records hold
def test_claim_3_not_measured(results, draws):
    verdict = claim_3(evidence(results, few_shot_draws=draws))["verdict"]
    assert verdict == "not measured (needs few_shot with FEW_SHOT_DRAWS >= 2)"


def test_claim_3_defaults():
    claim = claim_3(evidence([run("few_shot", values=[0.2, 0.8])], few_shot_k=None, few_shot_draws=None))
    from peftbook.bench import FEW_SHOT_K
    check(claim, "holds", f"2 draws of k={FEW_SHOT_K}")


def prompt_vs_few_shot(prompt_value, few_value, prompt_latency=0.005, few_latency=0.015):
    return [run("prompt_tuning", prompt_value, latency_s=prompt_latency),
            run("few_shot", few_value, latency_s=few_latency, prompt_tokens=272.0, values=[few_value])]


@pytest.mark.parametrize("results, expected", [
    (prompt_vs_few_shot(0.9, 0.6), "holds"),
    (prompt_vs_few_shot(0.6, 0.6), "partly: cheaper at inference, tie accuracy"),
    (prompt_vs_few_shot(0.9, 0.6, prompt_latency=0.02), "partly: not cheaper at inference, higher accuracy"),
    (prompt_vs_few_shot(0.4, 0.6, prompt_latency=0.02), "does not hold"),
])
def test_claim_4(results, expected):
    claim = claim_4(evidence(results, prompt_tokens_plain=40.25, num_virtual_tokens=8))
    assert claim["verdict"] == expected
    check(claim, expected, f"accuracy {results[0]['value']:.3f} vs few-shot {results[1]['value']:.3f}",
          "tokens per query 48 vs 272", f"latency {1000 * results[0]['latency_s']:.1f} vs 15.0 ms")


@pytest.mark.parametrize("results, fields, expected", [
    ([run("prompt_tuning")], {}, "not measured (few_shot not in this run)"),
    ([], {}, "not measured (prompt_tuning, few_shot not in this run)"),
    (prompt_vs_few_shot(0.9, 0.6), {"prompt_tokens_plain": None},
     "not measured (needs the tokens of a plain query and prompt tuning's num_virtual_tokens)"),
])
def test_claim_4_not_measured(results, fields, expected):
    assert claim_4(evidence(results, **fields)) == {"id": 4, "claim": CLAIMS[4], "measured": "-", "verdict": expected}


@pytest.mark.parametrize("prefix_params, prefix_value, expected", [
    (200, 0.8, "holds"),
    (200, 0.52, "does not hold: a tie within the scoring noise"),
    (200, 0.3, "does not hold"),
    (50, 0.8, "does not hold: prefix tuning does not train more here"),
    (100, 0.8, "does not hold: prefix tuning does not train more here"),
])
def test_claim_5(prefix_params, prefix_value, expected):
    results = [run("prefix_tuning", prefix_value, trainable_params=prefix_params),
               run("prompt_tuning", 0.5, trainable_params=100)]
    claim = claim_5(evidence(results))
    assert claim["verdict"] == expected
    check(claim, expected, f"prefix trains {prefix_params / 100:.1f}x the parameters", f"{prefix_value:.3f} vs 0.500")


def test_claim_5_not_measured():
    assert claim_5(evidence([run("prompt_tuning")]))["verdict"] == "not measured (prefix_tuning not in this run)"


@pytest.mark.parametrize("zero, random_gate, expected", [
    ([2.0, 1.0, 0.5], [4.0, 1.0, 0.5], "holds"),  # lower initial loss, and steadier
    ([2.0, 1.5, 0.5], [4.0, 3.9, 3.8], "partly"),  # lower initial loss, but jumpier steps
    ([4.0, 1.0, 0.5], [4.0, 3.9, 3.8], "does not hold"),  # same start, jumpier
    ([4.0, 3.0, 2.0], [4.0, 3.0, 2.0], "does not hold: no difference beyond 2%"),
])
def test_claim_6(zero, random_gate, expected):
    stats = {"zero": loss_stability(zero), "random": loss_stability(random_gate)}
    claim = claim_6(evidence(gate_stats=stats))
    assert claim["verdict"] == expected
    check(claim, expected, f"initial loss {zero[0]:.3f} (zero) vs {random_gate[0]:.3f} (random)", "step change std",
          f"final loss {zero[-1]:.3f} (zero)")


@pytest.mark.parametrize("lora, expected", [
    (0.8, "holds: LoRA beats full fine-tuning here"), (0.52, "holds: a tie within the scoring noise"),
    (0.3, "does not hold: LoRA scores lower")])
def test_claim_7(lora, expected):
    claim = claim_7(evidence([run("lora", lora), run("full", 0.5)]))
    assert claim["verdict"] == expected
    check(claim, expected, f"accuracy LoRA {lora:.3f} vs full 0.500 (noise 0.063)")


def test_claim_7_not_measured():
    assert claim_7(evidence([run("qlora")]))["verdict"] == "not measured (lora, full not in this run)"


@pytest.mark.parametrize("merged, prefix, adapter, expected", [
    (10.2, 12.0, 13.0, "holds"),
    (11.0, 12.0, 13.0, "does not hold: merged LoRA is slower than the base"),
    (10.0, 10.4, 10.5, "not on this model: the extra attention of prefix tuning and LLaMA-Adapter is within 5% here"),
    (10.0, 12.0, 10.3, "partly: merged LoRA is free, but only one of the other two costs more than 5%"),
])
def test_claim_8(merged, prefix, adapter, expected):
    forward_ms = {"base": 10.0, "lora": 12.5, "lora merged": merged, "prefix_tuning": prefix, "llama_adapter": adapter}
    check(claim_8(evidence(forward_ms=forward_ms)), expected,
          f"lora 1.25x, lora merged {merged / 10:.2f}x, prefix_tuning {prefix / 10:.2f}x, "
          f"llama_adapter {adapter / 10:.2f}x the base forward time")


@pytest.mark.parametrize("qlora, qlora_weights_8b, expected, numbers", [
    (0.5, 0.25, "holds", ["QLoRA 0.500 vs LoRA 0.500 (tie)", "4.0x at 8B"]),
    (0.7, 0.25, "holds", ["(higher)"]),
    (0.5, 0.35, "partly: quality kept; at 8B the embeddings and output head stay 16-bit, so all weights shrink 2.9x",
     ["2.9x at 8B"]),
    (0.3, 0.25, "does not hold: QLoRA scores lower", ["(lower)"]),
])
def test_claim_9(qlora, qlora_weights_8b, expected, numbers):
    results = [run("qlora", qlora, memory_by_category={"weights": 100}), run("lora", 0.5)]
    claim = claim_9(evidence(results, simulated_8b=simulated(qlora_weights=qlora_weights_8b)))
    assert claim["verdict"] == expected
    check(claim, expected, "a 4-bit layer is 3.9x smaller than in bf16",
          "all weights 4.0x smaller here (a float32 base)", *numbers)


def test_claim_9_first_run_gives_the_weights_and_dtype_is_optional():
    results = [run("qlora", error="boom", memory_by_category={"weights": 1}),
               run("qlora", memory_by_category={"weights": 200}), run("lora"),
               run("qlora", seed=1, memory_by_category={"weights": 100})]
    check(claim_9(evidence(results, model_dtype=None)), "holds", "all weights 2.0x smaller here, ")


@pytest.mark.parametrize("results, fields, expected", [
    ([run("lora")], {}, "not measured (qlora not in this run)"),
    ([run("lora"), run("qlora")], {"simulated_8b": None}, "not measured (needs the simulator at 8B)")])
def test_claim_9_not_measured(results, fields, expected):
    assert claim_9(evidence(results, **fields))["verdict"] == expected


@pytest.mark.parametrize("diverse, expected", [
    (0.8, "holds"), (0.52, "does not hold: a tie within the scoring noise"), (0.3, "does not hold")])
def test_claim_10(diverse, expected):
    claim = claim_10(evidence(ablation={"narrow": 0.5, "diverse": diverse},
                              ablation_sizes={"narrow": 64, "diverse": 60}))
    assert claim["verdict"] == expected
    check(claim, expected, f"LoRA on 60 diverse examples: accuracy {diverse:.3f}; on 64 narrow (shortest) ones: 0.500")


@pytest.mark.parametrize("check_claim, field", [
    (claim_6, "gate_stats"), (claim_8, "forward_ms"), (claim_10, "ablation"), (claim_10, "ablation_sizes")])
def test_missing_experiment_is_not_measured(check_claim, field):
    claim = check_claim(evidence(**{field: None}))
    assert claim["measured"] == "-" and claim["verdict"].startswith("not measured (needs ")


def test_check_all_in_order_with_ids_and_texts():
    results = [run("few_shot", values=[0.5, 0.6], prompt_tokens=272.0), run("prompt_tuning"),
               run("prefix_tuning", trainable_params=200), run("lora"), run("qlora"),
               run("full", peak_memory_bytes=2000, step_time_s=2.0)]
    claims = check_all(evidence(results))
    assert [c["id"] for c in claims] == list(range(1, 11))
    assert [c["claim"] for c in claims] == [CLAIMS[i] for i in range(1, 11)]
    assert all(c["measured"] != "-" for c in claims)  # everything was measured
    assert sum(tally(claims).values()) == 10
    assert check_all(evidence())[1]["verdict"].startswith("not measured")
