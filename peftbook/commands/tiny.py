"""``python -m peftbook tiny build|report``: regenerate the tiny world and its base model."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("tiny", help="build the embedded tiny base (corpus, tasks, tokenizer, model)")
    actions = parser.add_subparsers(dest="tiny_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="regenerate tasks, corpus, tokenizer and base model (deterministic)")
    build.add_argument("--out", default=None, help="data directory to write (default: the package's data/)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the recipe's)")
    build.add_argument("--documents", type=int, default=None, help="corpus passages (default: the recipe's)")
    build.add_argument("--init", default=None, metavar="DIR",
                       help="continue the build of the model in DIR (made by this recipe): skip the stages it has done")
    build.add_argument("--no-curriculum", action="store_true",
                       help="stop after the world stage (the base before the induction/polarity curriculum)")
    build.add_argument("--tasks-only", action="store_true", help="only write the task JSONL files")
    build.add_argument("--no-report", action="store_true", help="skip the quality gates and model card")
    report = actions.add_parser("report", help="measure the quality gates and write README.md + metrics.json")
    report.add_argument("--out", default=None, help="data directory (default: the package's data/)")
    report.add_argument("--render-only", action="store_true", help="rewrite README.md from metrics.json")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from peftbook.models import DATA_DIR
    from peftbook.tiny import build as recipe
    from peftbook.tiny.pretrain import PretrainConfig
    from peftbook.tiny.report import render_card, write_report

    out = Path(args.out) if args.out else DATA_DIR
    if args.tiny_command == "report":
        if args.render_only:
            render_card(out)
        else:
            write_report(out)
        return 0
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed} is not allowed; use an integer >= 0")
    if args.tasks_only:
        for task, path in recipe.write_tasks(out, args.seed).items():
            print(f"{task}: {path}")
        return 0
    config = PretrainConfig(seed=args.seed)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps {args.steps} is not allowed; use an integer >= 1")
        config.steps = args.steps
    documents = args.documents or recipe.NUM_DOCUMENTS
    if documents < 10:
        raise ValueError(f"--documents {documents} is not allowed; use an integer >= 10")
    if args.init is not None and not (Path(args.init) / "config.json").exists():
        raise FileNotFoundError(f"--init {args.init}: no model there (config.json missing)")
    model_dir = recipe.build(out, seed=args.seed, num_documents=documents, config=config,
                             curriculum=() if args.no_curriculum else None, init=args.init)
    if not args.no_report:
        write_report(out)  # the quality gates, README.md and metrics.json beside the model
    print(f"tiny base written to {model_dir}")
    return 0
