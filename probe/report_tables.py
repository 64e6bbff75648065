"""Markdown tables for the phase-1 report from analyse.py JSONs (not for merging).
python probe/report_tables.py WINDOWS SCORES RUN_DIR..."""

import json
import sys
from pathlib import Path

windows, scores, runs = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3:]
cols = ("vs_clean", "vs_hard", "vs_intensity", "vs_short_apex", "vs_distractor")
print(
    "| run | window | score | noisy vs clean | noisy vs hard | vs intensity | vs short_apex | vs distractor |"
)
print("|---|---|---|---|---|---|---|---|")
for run in runs:
    r = json.load(open(Path(run) / "analysis.json"))
    for w in windows:
        for s in scores:
            v = r["windows"][w].get(s)
            if v:
                print(f"| {Path(run).name} | {w} | {s} | " + " | ".join(f"{v[c]:.3f}" for c in cols) + " |")
