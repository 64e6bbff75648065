"""Per-epoch AUROC (this epoch's value / cumulative since epoch 1) of a few scores (not for merging).
python probe/per_epoch_table.py RUN_DIR SCORES"""

import json
import sys
from pathlib import Path

r = json.load(open(Path(sys.argv[1]) / "analysis.json"))
scores = sys.argv[2].split(",")
print("| epoch | test WAR | " + " | ".join(f"{s} epoch / cum (vs clean; vs hard)" for s in scores) + " |")
print("|---|---|" + "---|" * len(scores))
for e, war in enumerate(r["test_war"], start=1):
    pe, cu = r["per_epoch"][str(e)], r["windows"][f"1-{e}"]
    cells = [
        f"{pe[s]['vs_clean']:.2f}/{cu[s]['vs_clean']:.2f}; {pe[s]['vs_hard']:.2f}/{cu[s]['vs_hard']:.2f}"
        for s in scores
    ]
    print(f"| {e} | {100 * war:.1f} | " + " | ".join(cells) + " |")
