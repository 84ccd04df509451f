"""``python -m peftbook fetch NAME``: download a named real model and convert it into the cache; or convert a GGUF file."""
from __future__ import annotations

from peftbook.errors import ConfigError, strict_json


def add_parser(subparsers) -> None:
    from peftbook.hub import CACHE_ENV, NAMED_MODELS

    parser = subparsers.add_parser(
        "fetch", help="download a named real model from the package index and convert it into the cache",
        description=f"Named models: {', '.join(NAMED_MODELS)}. The cache is ${CACHE_ENV} (default ~/.cache/peftbook); "
                    "load a fetched model with load_model(NAME) or --model NAME.")
    parser.add_argument("models", nargs="*", metavar="NAME|FILE.gguf",
                        help=f"named models ({', '.join(NAMED_MODELS)}), or one .gguf file with --out")
    parser.add_argument("--out", default=None, metavar="DIR", help="with a .gguf file: the new folder to convert it into")
    parser.add_argument("--force", action="store_true", help="download and convert again even when the cache has the model")
    parser.add_argument("--list", action="store_true", help="list the named models and whether the cache has them")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import time

    from peftbook import hub

    if args.list or not args.models:
        rows = [{"name": name, "package": entry.requirement, "cached": (hub.named_model_dir(name) / "config.json").exists(),
                 "folder": str(hub.named_model_dir(name)), "description": entry.description}
                for name, entry in hub.NAMED_MODELS.items()]
        return show(rows, args.json)
    ggufs = [m for m in args.models if hub.is_gguf(m)]
    if ggufs and (len(args.models) != 1 or args.out is None):
        raise ConfigError(f"fetch {' '.join(args.models)}: a .gguf file is converted alone and needs --out DIR "
                          "(the new folder to write)")
    if args.out is not None and not ggufs:
        raise ConfigError("--out is for a .gguf file; named models go to the cache "
                          f"(${hub.CACHE_ENV}, now {hub.cache_dir()})")
    unknown = [m for m in args.models if m not in hub.NAMED_MODELS and not hub.is_gguf(m)]
    if unknown:
        raise ConfigError(f"unknown named model {unknown[0]!r}; known: {', '.join(hub.NAMED_MODELS)}, or a .gguf file with --out")
    rows = []
    for name in args.models:
        start = time.perf_counter()
        if hub.is_gguf(name):
            folder, status = hub.convert_gguf(name, args.out), "converted"
        else:
            cached = (hub.named_model_dir(name) / "config.json").exists() and not args.force
            folder, status = hub.fetch_model(name, force=args.force), "cached" if cached else "fetched"
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        rows.append({"name": name, "status": status, "folder": str(folder), "size_mb": round(size / 1e6, 1),
                     "seconds": round(time.perf_counter() - start, 1)})
    return show(rows, args.json)


def show(rows: list[dict], as_json: bool) -> int:
    if as_json:
        print(strict_json(rows, indent=2))
        return 0
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(f"{c:<{widths[c]}}" for c in columns))
    for row in rows:
        print("  ".join(f"{str(row[c]):<{widths[c]}}" for c in columns))
    return 0
