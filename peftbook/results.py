"""Benchmark results: the record fields, the files they are written to, and the table people read.

A record is one run of one method with one seed (``bench.run_bench`` makes them). ``write_results``
writes ``results.json`` (every field, with the settings that produced them) and ``results.csv``
(the contract's fields plus the common extras); ``summarize`` folds the runs of a method into one
row (mean and spread over seeds) and ``format_table`` prints those rows.
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

RECORD_FIELDS = ("method", "model", "task", "seed", "device", "trainable_params", "total_params",
                 "peak_memory_bytes", "memory_by_category", "step_time_s", "tokens_per_s", "metric", "value",
                 "versions")
CSV_EXTRA = ("impl", "value_std", "validation_value", "bleu", "rougeL", "latency_s", "latency_merged_s",
             "trainable_closed_form", "steps", "lr", "train_seconds", "shots_used", "train_examples", "error")


def write_results(records: list[dict], out, settings: dict | None = None) -> None:
    """``out/results.json`` (settings + records) and ``out/results.csv`` (one row per record)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": settings, "records": records}, indent=1, default=str))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RECORD_FIELDS + CSV_EXTRA, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            row = {k: record.get(k) for k in RECORD_FIELDS + CSV_EXTRA}
            row["memory_by_category"] = json.dumps(record.get("memory_by_category"))
            row["versions"] = json.dumps(record.get("versions"))
            writer.writerow(row)


def read_results(out) -> dict:
    """``{"settings", "records"}`` from ``out/results.json``."""
    return json.loads((Path(out) / "results.json").read_text())


def summarize(records: list[dict]) -> list[dict]:
    """One row per method: mean, sample standard deviation and number of seeds, and the other figures.

    One seed has no spread over seeds: its ``std`` is then the record's own ``value_std`` (few-shot:
    the spread over draws of the demonstrations), or 0.
    """
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        runs = [r for r in records if r["method"] == method and not r.get("error")]
        if not runs:
            rows.append({"method": method, "error": next(r["error"] for r in records if r["method"] == method)})
            continue
        values = [r["value"] for r in runs]
        spread = (runs[0].get("value_std") if len(runs) == 1 else statistics.stdev(values)) or 0.0

        def mean(key):
            found = [r[key] for r in runs if r.get(key) is not None]
            return sum(found) / len(found) if found else None

        rows.append({"method": method, "metric": runs[0]["metric"], "value": sum(values) / len(values), "std": spread,
                     "seeds": len(runs), "trainable_params": runs[0]["trainable_params"],
                     "total_params": runs[0]["total_params"], "peak_memory_bytes": mean("peak_memory_bytes"),
                     "step_time_s": mean("step_time_s"), "tokens_per_s": mean("tokens_per_s"),
                     "latency_s": mean("latency_s"), "latency_merged_s": mean("latency_merged_s"),
                     "bleu": mean("bleu"), "memory_by_category": runs[0].get("memory_by_category")})
    return rows


def format_table(records: list[dict], footnote: str | None = None) -> str:
    """The human table of ``summarize(records)``; ``footnote`` says what the columns measured."""
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = f"{'method':<14} {'metric':>15} {'n':>2} {'trainable':>10} {'%':>7} {'peak MB':>8} {'step s':>7} " \
             f"{'tok/s':>8} {'latency ms':>10}"
    lines = [header, "-" * len(header)]
    for row in summarize(records):
        if row.get("error"):
            lines.append(f"{row['method']:<14} failed: {row['error']}")
            continue
        metric = f"{row['value']:.3f}±{row['std']:.3f}"
        share = 100 * row["trainable_params"] / row["total_params"]
        peak = row["peak_memory_bytes"] / 2**20 if row["peak_memory_bytes"] else None
        latency = row["latency_s"] * 1000 if row["latency_s"] is not None else None
        if row["latency_merged_s"] is not None:
            latency_text = f"{latency:.1f}/{row['latency_merged_s'] * 1000:.1f}m"
        else:
            latency_text = fmt(latency, ".1f")
        lines.append(f"{row['method']:<14} {metric:>15} {row['seeds']:>2} {row['trainable_params']:>10,} {share:>7.3f} "
                     f"{fmt(peak, '.1f'):>8} {fmt(row['step_time_s'], '.3f'):>7} {fmt(row['tokens_per_s'], ',.0f'):>8} "
                     f"{latency_text:>10}")
    if footnote:
        lines.append(footnote)
    return "\n".join(lines)
