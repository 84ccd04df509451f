"""Few-shot scoring speed: whole prompts (the per-query path) vs the shared-demonstration path.

For each model, one draw of k demonstrations is scored on the same test queries twice in one
process: ``share_prefix=False`` (every query re-encodes the k demonstrations, logits at every
position) and ``share_prefix=True`` (the demonstrations run once; each query runs on a copy of
their KV cache; logits only at each row's last position). Prints prompts per second of each, the
ratio, and whether the predictions are identical.

    python benchmarks/few_shot_speed.py --models tiny smollm2-135m --task sentiment --shots 8 --examples 200
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def measure(model_name: str, task_name: str, shots: int, examples: int, repeats: int) -> dict:
    import peftbook
    from peftbook.batching import encode_prompt, encode_target
    from peftbook.evaluate import next_token_logprobs
    from peftbook.methods.few_shot import FewShotConfig, build_prompt, select_shots

    model, tokenizer = peftbook.load_model(model_name, device="cpu")
    task = peftbook.load_task(task_name)
    demos = select_shots(task.examples("train"), FewShotConfig(shots=shots, seed=0))
    queries = task.examples("test")[:examples]
    prompts = [encode_prompt(tokenizer, build_prompt(task, demos, q, FewShotConfig().separator)) for q in queries]
    labels = [encode_target(tokenizer, " " + w.strip())[0] for w in task.labels]
    result = {"model": model_name, "task": task_name, "shots": shots, "examples": len(prompts),
              "prompt_tokens": sum(map(len, prompts)) / len(prompts)}
    scores, times = {}, {"per_query": [], "shared": []}
    for _ in range(repeats):  # the two paths in turn, so a busy moment of the machine hits both
        for name, share in (("per_query", False), ("shared", True)):
            start = time.perf_counter()
            scores[name] = next_token_logprobs(model, tokenizer.pad_token_id, prompts, labels, share_prefix=share)
            times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        result[f"{name}_prompts_per_s"] = len(prompts) / min(seconds)  # best of the repeats
    result["speedup"] = result["shared_prompts_per_s"] / result["per_query_prompts_per_s"]
    result["identical_predictions"] = bool(torch.equal(scores["per_query"].argmax(1), scores["shared"].argmax(1)))
    result["max_abs_logprob_diff"] = (scores["per_query"] - scores["shared"]).abs().max().item()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny"])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings per path")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [measure(m, args.task, args.shots, args.examples, args.repeats) for m in args.models]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
