"""Compact markdown tables from analyse.py's JSON (not for merging).

python probe/summarise.py A.json [--scores s1,s2] [--windows 1-3,1-6] [--epochs 1,3,6]"""

from __future__ import annotations

import argparse
import json

COLS = ("vs_clean", "vs_hard", "vs_intensity", "vs_short_apex", "vs_distractor")


def fmt(x: float) -> str:
    return "  n/a" if x != x else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--scores")
    ap.add_argument("--windows")
    ap.add_argument("--epochs")
    ap.add_argument("--best", type=int, default=0, help="list the N best scores for vs_hard over all windows")
    a = ap.parse_args()
    r = json.load(open(a.json))
    print(f"# {r['run']}\n\ntest WAR: " + " ".join(f"{100 * w:.1f}" for w in r["test_war"]))
    print("counts:", r["counts"])
    if not r["per_epoch"]:
        return
    scores = a.scores.split(",") if a.scores else list(r["per_epoch"]["1"])
    blocks = [("window", w, r["windows"][w]) for w in (a.windows.split(",") if a.windows else [])]
    blocks += [("epoch", e, r["per_epoch"][e]) for e in (a.epochs.split(",") if a.epochs else [])]
    for kind, key, tab in blocks:
        print(f"\n{kind} {key}\n\n| score | " + " | ".join(COLS) + " |\n|---|" + "---|" * len(COLS))
        for s in scores:
            if s in tab:
                print(f"| {s} | " + " | ".join(fmt(tab[s][c]) for c in COLS) + " |")
    if a.best:
        rows = [
            (v["vs_hard"], v["vs_clean"], w, s)
            for w, tab in r["windows"].items()
            for s, v in tab.items()
            if v["vs_hard"] == v["vs_hard"]
        ]
        rows.sort(reverse=True)
        print("\nbest vs_hard (window, score): vs_hard / vs_clean")
        for h, c, w, s in rows[: a.best]:
            print(f"  {w:>6} {s:<40} {h:.3f} / {c:.3f}")


if __name__ == "__main__":
    main()
