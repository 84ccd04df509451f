"""Why do demonstrations hurt SmolLM2-135M-Instruct on sentiment? Plain prompts vs its chat template.

Zero-shot, the instruct model labels our sentiment reviews well; with k demonstrations in the plain
"Review: ... Sentiment: label" format it does worse (issue 15 measured 0.965 -> 0.808). This script
scores, on the same test queries and the same draws of demonstrations:

* ``plain``: the course's prompt (demonstrations joined by blank lines, label words after a space);
* ``plain, calibrated``: the same with contextual calibration (Zhao et al. 2021, arXiv 2102.09690),
  which removes a constant preference for one label word;
* ``plain, balanced``: demonstrations drawn class-balanced;
* ``chat``: the demonstrations as user/assistant turns through the model's own chat template
  (``FewShotConfig(chat=True)``), the label words as the assistant's first word.

and, for each, the share of predictions per label and how often the prediction is the label of the
*last* demonstration (recency; Zhao et al.'s "recency bias"), against how often that would happen by
chance given the predictions' label shares. Writes one JSON document; prints a markdown table.

    python benchmarks/smollm2_few_shot.py --shots 4 --draws 5 --examples 200 --json smollm2_few_shot.json
"""
from __future__ import annotations

import argparse
import json
import time

SETTINGS = {  # name -> FewShotConfig fields
    "plain": {},
    "plain, calibrated": {"calibrate": True},
    "plain, balanced": {"selection": "balanced"},
    "chat": {"chat": True},
}


def run(model_name: str, task_name: str, shots: int, draws: int, examples: int) -> dict:
    import peftbook
    from peftbook.methods.few_shot import FewShotConfig, score_demonstrations, select_shots

    model, tokenizer = peftbook.load_model(model_name, device="cpu")
    task = peftbook.load_task(task_name)
    train, queries = task.examples("train"), task.examples("test")[:examples]
    truth = [q.label or q.output for q in queries]
    rows = []
    for name, fields in SETTINGS.items():
        for k in (0, shots):
            if k == 0 and ("calibrated" in name or "balanced" in name):
                continue  # the same zero-shot prompt as "plain" (calibration of 0 shots aside)
            start = time.perf_counter()
            accuracies, predicted, last_label_hits, last_label_chance = [], [], 0, 0.0
            for draw in range(draws if k else 1):
                config = FewShotConfig(shots=k, seed=draw, **fields)
                shots_drawn = select_shots(train, config)
                result = score_demonstrations(model, tokenizer, task, queries, shots_drawn, config)
                accuracies.append(result["accuracy"])
                predicted += result["predictions"]
                if k:
                    last = shots_drawn[-1].label or shots_drawn[-1].output
                    share = sum(p == last for p in result["predictions"]) / len(queries)
                    last_label_hits += share
                    last_label_chance += sum(t == last for t in truth) / len(queries)
            runs = len(accuracies)
            mean = sum(accuracies) / runs
            sd = (sum((a - mean) ** 2 for a in accuracies) / (runs - 1)) ** 0.5 if runs > 1 else 0.0
            rows.append({"setting": name, "shots": k, "draws": runs, "accuracy_mean": mean, "accuracy_sd": sd,
                         "accuracies": accuracies,
                         "predicted_share": {label: predicted.count(label) / len(predicted) for label in task.labels},
                         "true_share": {label: truth.count(label) / len(truth) for label in task.labels},
                         "predicted_last_label": last_label_hits / runs if k else None,
                         "true_is_last_label": last_label_chance / runs if k else None,
                         "seconds": time.perf_counter() - start})
            print(markdown_row(rows[-1], task.labels), flush=True)
    return {"model": model_name, "task": task_name, "examples": len(queries), "rows": rows}


def markdown_row(row: dict, labels) -> str:
    shares = " / ".join(f"{row['predicted_share'][label]:.2f}" for label in labels)
    recency = "—" if row["predicted_last_label"] is None else \
        f"{row['predicted_last_label']:.2f} (truth {row['true_is_last_label']:.2f})"
    spread = f" ± {row['accuracy_sd']:.3f}" if row["draws"] > 1 else ""
    return (f"| {row['setting']} | {row['shots']} | {row['accuracy_mean']:.3f}{spread} | {shares} | {recency} | "
            f"{row['seconds']:.0f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    import peftbook

    labels = peftbook.load_task(args.task).labels  # a bad task name fails here, before the model loads
    print(f"| prompt | shots | accuracy | predicted share ({' / '.join(labels)}) | prediction = last "
          "demonstration's label | s |")
    print("|---|---:|---:|---|---|---:|")
    result = run(args.model, args.task, args.shots, args.draws, args.examples)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
