"""Summarise a sweep of runs (their metrics.json) as a markdown table of mean ± std over seeds.

    python training/sweeps/summarize.py RUNS_DIR [--eval-set test] [--glob '*-multidomain-s*']
        [--update docs/reproduction.md --marker table1]

Groups runs by (model, K); reports the test error of the last epoch (what the published weight is)
and of the best epoch (the paper's "top performance"), each as mean ± sample std over seeds, with
the per-domain top-1 of the last epoch. Numbers come only from the runs' metrics.json files.
With ``--update FILE --marker NAME`` the table replaces the block between ``<!-- NAME -->`` and
``<!-- /NAME -->`` in FILE (how docs/reproduction.md is kept current).
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

__all__ = ["load_runs", "summarize", "update_block"]


def load_runs(root: Path, pattern: str) -> List[dict]:
    runs = []
    for path in sorted(root.glob(f"{pattern}/metrics.json")):
        m = json.loads(path.read_text())
        m["_run"] = path.parent.name
        runs.append(m)
    return runs


def _mean_std(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summarize(runs: List[dict], eval_set: str) -> str:
    groups: Dict[Tuple[str, int], List[dict]] = defaultdict(list)
    for r in runs:
        k = int(r.get("model_kwargs", {}).get("num_modes", 2)) if r["model"].endswith(("_mn", "_mgn")) else 0
        groups[(r["model"], k)].append(r)
    domains = sorted({d for r in runs for d in r["eval"][eval_set].get("top1_per_domain", {})})
    head = ["model", "K", "seeds", "error last (%)", "error best (%)"] + [f"{d} top-1 last" for d in domains]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, k), rs in sorted(groups.items()):
        last = [100.0 - r["eval"][eval_set]["top1"] for r in rs]
        best = [100.0 - r["best"]["top1"] for r in rs if r.get("best", {}).get("eval_set") == eval_set]
        per_dom = [_mean_std([r["eval"][eval_set]["top1_per_domain"][d] for r in rs]) for d in domains]
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
        lines.append(f"| `{model}` | {k or '–'} | {seeds} | {_mean_std(last)} | "
                     f"{_mean_std(best) if best else '–'} | " + " | ".join(per_dom) + " |")
    return "\n".join(lines)


def update_block(text: str, marker: str, table: str) -> str:
    """text with the block between <!-- marker --> and <!-- /marker --> replaced by table."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        raise ValueError(f"markers {start} ... {end} not found")
    a, b = text.index(start) + len(start), text.index(end)
    return text[:a] + "\n" + table.strip() + "\n" + text[b:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--eval-set", default="test")
    ap.add_argument("--glob", default="*-multidomain-s*")
    ap.add_argument("--update", type=Path, help="a markdown file whose marked block gets the table")
    ap.add_argument("--marker", help="the block's name: <!-- NAME --> ... <!-- /NAME -->")
    args = ap.parse_args()
    if bool(args.update) != bool(args.marker):
        ap.error("--update and --marker go together")
    runs = load_runs(args.root, args.glob)
    if not runs:
        raise SystemExit(f"no metrics.json under {args.root}/{args.glob}")
    table = summarize(runs, args.eval_set)
    if args.update:
        args.update.write_text(update_block(args.update.read_text(), args.marker, table))
    print(table)


if __name__ == "__main__":
    main()
