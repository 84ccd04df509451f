"""``python -m peftbook fewshot``: k-shot accuracy (or slot accuracy) of a model, mean and spread over draws.

Example: ``python -m peftbook fewshot --model tiny --task sentiment --shots 0 1 2 4 8 --draws 5 --json``.
Queries are the first ``--examples`` (default 200) of the test split; shots are drawn from train.
"""
from __future__ import annotations

from peftbook.errors import strict_json
from peftbook.precision import DTYPE_CHOICES, precision_record


def add_parser(subparsers) -> None:
    from peftbook.methods.few_shot import SELECTIONS

    parser = subparsers.add_parser("fewshot", help="few-shot evaluation (no training): accuracy vs number of shots")
    parser.add_argument("--model", default="tiny", help="'tiny', a local directory, or a hub id")
    parser.add_argument("--task", default="sentiment", help="sentiment, data2text, or a local task directory/JSONL")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="numbers of shots")
    parser.add_argument("--draws", type=int, default=5, help="random draws of shots per k (zero-shot has one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selection", choices=SELECTIONS, default="random")
    parser.add_argument("--calibrate", action="store_true", help="contextual calibration (Zhao et al. 2021)")
    parser.add_argument("--chat", action="store_true",
                        help="demonstrations as chat turns through the tokenizer's chat template (instruct models)")
    parser.add_argument("--examples", type=int, default=200, help="evaluate on the first N test examples (0: all)")
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="auto: bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from peftbook.methods.few_shot import FewShotConfig, few_shot_curve, select_shots
    from peftbook.tasks import load_task

    # bad input fails before the model loads
    if args.draws < 1:
        raise ValueError(f"--draws {args.draws} is not allowed; use an integer >= 1")
    if args.examples < 0:
        raise ValueError(f"--examples {args.examples} is not allowed; use an integer >= 0 (0: all)")
    task = load_task(args.task)
    if args.chat and task.kind != "classification":
        raise ValueError(f"--chat is for classification tasks; {task.name} is a {task.kind} task")
    for k in args.shots:
        select_shots(task.examples("train"), FewShotConfig(shots=k, selection=args.selection))
    from peftbook.models import load_model

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"--chat needs a model whose tokenizer has a chat template; {args.model}'s has none")
    results = few_shot_curve(model, tokenizer, task, args.shots, draws=args.draws, seed=args.seed,
                             num_examples=args.examples or None, split=args.split,
                             selection=args.selection, calibrate=args.calibrate, chat=args.chat)
    document = {"task": task.name, "model": args.model, "metric": task.metric, "split": args.split,
                "examples": args.examples or len(task.examples(args.split)), "selection": args.selection,
                "calibrate": args.calibrate, "chat": args.chat, "seed": args.seed, "results": results,
                "precision": precision_record(model)}
    if args.json:
        print(strict_json(document, indent=2))
        return 0
    print(f"{task.name} ({task.metric}) with {args.model}, {document['examples']} {args.split} examples")
    print(f"{'shots':>5}  {'mean':>7}  {'std':>6}  values")
    for row in results:
        values = " ".join(f"{v:.3f}" for v in row["values"])
        fit = f"  (mean {row['shots_used']:.1f} shots fit the context)" if row.get("shots_used", row["shots"]) != row["shots"] else ""
        print(f"{row['shots']:>5}  {row['mean']:>7.3f}  {row['std']:>6.3f}  {values}{fit}")
    return 0
