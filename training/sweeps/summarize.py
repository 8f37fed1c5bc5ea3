"""Summarise a sweep of runs (their metrics.json) as a markdown table of mean ± std over seeds.

    python training/sweeps/summarize.py RUNS_DIR [--eval-set test] [--glob '*-multidomain-s*']
        [--update docs/reproduction.md --marker table1]
    python training/sweeps/summarize.py --curves RUN_DIR [RUN_DIR ...] [--last 5] [--update FILE --marker NAME]

Groups runs by (model, K); reports the test error of the last epoch (what the published weight is)
and of the best epoch (the paper's "top performance"), each as mean ± sample std over seeds, with
the per-domain top-1 of the last epoch. Numbers come only from the runs' metrics.json files.
With ``--update FILE --marker NAME`` the table (either kind) replaces the block between
``<!-- NAME -->`` and ``<!-- /NAME -->`` in FILE (how docs/reproduction.md is kept current).

With ``--curves``, each argument is one run folder, finished or not, and the table comes from its
``summary.csv``: epochs done, the current lr, and each eval set's top-1 at the last epoch and
averaged over the last ``--last`` epochs (the one-seed stand-in for a spread).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

__all__ = ["load_runs", "summarize", "curves", "update_block"]


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


def curves(run_dirs: List[Path], last: int = 5) -> str:
    """Per run, from its summary.csv: epochs done, lr, and per eval set the last epoch's top-1 and
    the mean over the last ``last`` epochs. A resumed epoch that was logged twice counts once (the
    later row)."""
    rows, sets = [], []
    for d in run_dirs:
        path = Path(d) / "summary.csv"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist")
        with open(path, newline="") as f:
            by_epoch = {int(r["epoch"]): r for r in csv.DictReader(f)}
        if not by_epoch:
            raise SystemExit(f"{path} has no finished epoch yet")
        epochs = [by_epoch[e] for e in sorted(by_epoch)]
        names = [k[:-len("_top1")] for k in epochs[-1] if k.endswith("_top1") and k != "train_top1"]
        sets += [s for s in names if s not in sets]
        rows.append((Path(d).name, epochs, names))
    head = ["run", "epochs done", "lr"] + [c for s in sets for c in (f"{s} top-1 last", f"mean last {last}")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, epochs, names in rows:
        cells = [f"`{name}`", str(int(epochs[-1]["epoch"]) + 1), f"{float(epochs[-1]['lr']):.4g}"]
        for s in sets:
            vals = [float(r[f"{s}_top1"]) for r in epochs[-last:]] if s in names else []
            cells += [f"{vals[-1]:.2f}", f"{statistics.mean(vals):.2f}"] if vals else ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
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
    ap.add_argument("root", type=Path, nargs="+", help="the runs' parent folder (with --curves: run folders)")
    ap.add_argument("--curves", action="store_true", help="per-run table from each run folder's summary.csv")
    ap.add_argument("--last", type=int, default=5, help="with --curves: epochs to average")
    ap.add_argument("--eval-set", default="test")
    ap.add_argument("--glob", default="*-multidomain-s*")
    ap.add_argument("--update", type=Path, help="a markdown file whose marked block gets the table")
    ap.add_argument("--marker", help="the block's name: <!-- NAME --> ... <!-- /NAME -->")
    args = ap.parse_args()
    if bool(args.update) != bool(args.marker):
        ap.error("--update and --marker go together")
    if args.curves:
        if args.last < 1:
            ap.error("--last must be >= 1")
        table = curves(args.root, args.last)
    else:
        if len(args.root) != 1:
            ap.error("give one RUNS_DIR (several folders only with --curves)")
        runs = load_runs(args.root[0], args.glob)
        if not runs:
            raise SystemExit(f"no metrics.json under {args.root[0]}/{args.glob}")
        table = summarize(runs, args.eval_set)
    if args.update:
        args.update.write_text(update_block(args.update.read_text(), args.marker, table))
    print(table)


if __name__ == "__main__":
    main()
