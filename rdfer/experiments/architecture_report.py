"""The architecture experiment's written report: results.json, results.md (per variant the mean and spread
over seeds, the targets of issue 22 met or not, with the numbers) and accuracy.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rdfer.experiments.architecture_eval import KINDS
from rdfer.experiments.common import seed_stat as stat
from rdfer.experiments.noise_report import _pyplot

HIT_KEYS = ("apex", "apex_chance", "distractor", "distractor_chance")
DETAIL_KEYS = (
    "keys_apex",
    "apex_any_clip",
    "apex_true_class_in_keys",
    "grid_ceiling",
    "distractor_clips_apex",
)


def groups(report: dict) -> dict[tuple[str, str], list[dict]]:
    """Runs by (setting, variant), in the report's order; each run joined with its details."""
    details = {(d["variant"], d["setting"], d["seed"]): d for d in report.get("details", [])}
    out: dict[tuple[str, str], list[dict]] = {}
    for r in report["runs"]:
        d = details.get((r["variant"], r["setting"], r["seed"]), {})
        out.setdefault((r["setting"], r["variant"]), []).append({**d, **r})
    return out


def _pct(s: tuple[float, float, int] | None) -> str:
    return "n/a" if s is None else f"{100 * s[0]:.1f} ± {100 * s[1]:.1f}"


def _rate(s: tuple[float, float, int] | None) -> str:
    return "n/a" if s is None else f"{s[0]:.0f} ± {s[1]:.0f}"


def accuracy_table(report: dict) -> list[str]:
    lines = [
        "| noise | variant | WAR | UAR | easy | intensity | short_apex | distractor | train clips/s "
        "| step clips/s, side by side | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (setting, variant), runs in groups(report).items():
        kinds = [_pct(stat(runs, lambda r, k=k: r["test"]["by_kind"][k])) for k in KINDS]
        lines.append(
            f"| {setting} | {variant} | {_pct(stat(runs, lambda r: r['test']['war']))} | "
            f"{_pct(stat(runs, lambda r: r['test']['uar']))} | {' | '.join(kinds)} | "
            f"{_rate(stat(runs, lambda r: r['clips_per_s']))} | {_step_rate(report, variant)} | {len(runs)} |"
        )
    return lines


def _step_rate(report: dict, variant: str) -> str:
    rate = (report.get("step_clips_per_s") or {}).get(variant)
    return "n/a" if rate is None else f"{rate:.0f}"


def position_table(report: dict) -> list[str]:
    lines = [
        "| noise | variant | apex hit (short_apex) | chance | distractor hit | chance | key positions on the "
        "apex | some clip on the apex | true class among the keys | grid ceiling | true class's key on "
        "the apex (distractor clips) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (setting, variant), runs in groups(report).items():
        hits = [_pct(stat(runs, lambda r, k=k: r["hit_rate"][k])) for k in HIT_KEYS]
        extra = [_pct(stat(runs, lambda r, k=k: r["positions"][k])) for k in DETAIL_KEYS]
        lines.append(f"| {setting} | {variant} | {' | '.join(hits)} | {' | '.join(extra)} |")
    return lines


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def targets(report: dict, setting: str = "symmetric-0") -> list[str]:
    """Issue 22's targets (stated for `--preset full` at 0% noise), on this report's means."""
    g = groups(report)
    if not g.get((setting, "rdfer")):
        return []

    def mean(variant: str, get) -> float | None:
        s = stat(g.get((setting, variant), []), get)
        return None if s is None else s[0]

    def kind(k: str):
        return lambda r: r["test"]["by_kind"][k]

    lines = []
    hit = mean("rdfer", lambda r: r["hit_rate"]["apex"])
    chance = mean("rdfer", lambda r: r["hit_rate"]["apex_chance"])
    if hit is not None:
        ok = _verdict(hit >= 0.8)
        lines.append(f"- key-position hit rate on short_apex >= 0.8: {ok} ({hit:.2f}; chance {chance:.2f})")
    for k in ("short_apex", "distractor"):
        a, b = mean("rdfer", kind(k)), mean("uniform-clips", kind(k))
        if a is not None and b is not None:
            ok = _verdict(a - b >= 0.03)
            lines.append(f"- rdfer >= uniform-clips + 3 WAR on {k}: {ok} ({_diff(a, b)})")
    war = lambda r: r["test"]["war"]  # noqa: E731
    a, b = mean("rdfer", war), mean("apex-clips", war)
    if b is not None:
        lines.append(f"- rdfer within 2 WAR of apex-clips overall: {_verdict(b - a <= 0.02)} ({_diff(a, b)})")
    if mean("peer", war) is not None:
        lines.append(_peer_target(mean, kind, war, report.get("step_clips_per_s") or {}))
    return lines


def _peer_target(mean, kind, war, steps: dict) -> str:
    a, p = mean("rdfer", war), mean("peer", war)
    reasons = ("intensity", "short_apex", "distractor")
    wins = [(k, mean("rdfer", kind(k)), mean("peer", kind(k))) for k in reasons]
    ok = a > p and all(x is not None and y is not None and x > y for _, x, y in wins)
    # The side-by-side step timing where there is one; the runs' own rates move with the machine's load.
    cost = [steps.get(v) or mean(v, lambda r: r["clips_per_s"]) for v in ("rdfer", "peer")]
    cheap = None if None in cost else cost[0] >= cost[1]
    rates = "n/a" if None in cost else f"{cost[0]:.0f} vs {cost[1]:.0f} clips/s"
    return (
        f"- rdfer above the peer overall and on every hard reason: {_verdict(ok)} (overall {_diff(a, p)}; "
        + ", ".join(f"{k} {_diff(x, y)}" for k, x, y in wins)
        + f"); at the same or lower cost per clip: {_verdict(cheap)} ({rates})"
    )


def _diff(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    return f"{100 * a:.1f} vs {100 * b:.1f}: {100 * (a - b):+.1f}"


def markdown(report: dict, variants: dict) -> str:
    g = report["generator"]
    minutes = sum(d.get("seconds", 0) for d in report.get("details", [])) / 60
    kinds = ", ".join(f"{k} {n}" for k, n in report["test_kinds"].items())
    lines = [
        f"# Architecture experiment ({report['preset']} preset)",
        "",
        f"Command: `{report['command']}`  ",
        f"Device: {report['device']}; {report['date']}; training and testing {minutes:.1f} min (the runs' "
        f"own times), {report['seconds'] / 60:.1f} min for this invocation (reused runs included).  ",
        f"Data: SynthDFER `{g['preset']}`, generator seed {g['seed']}, fixed before any run: "
        f"{report['train_clips']} train / {report['test_clips']} clean test clips (by kind: {kinds}). "
        f"Label noise drawn with seed {report['noise_seed']}; training seeds {report['seeds']}.  ",
        "Generator: "
        + ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("preset", "seed", "name"))
        + ".  ",
        "Training: the packaged `quick` config with "
        + ", ".join(f"`{o}`" for o in report["preset_overrides"])
        + "; per variant: "
        + "; ".join(f"{v}: {variants[v].note}" for v in report["variants"] if v in variants)
        + ".",
        "",
        "Clean-test WAR / UAR and WAR by clip kind at the last epoch, in %, mean ± standard deviation over "
        "the seeds; training clips/s of each variant on this machine: the runs' own (epochs after the "
        "first, moved by whatever else ran then) and one training step of every variant timed side by side "
        "(rdfer.experiments.architecture_cost; the fastest of the rounds):",
        "",
        *accuracy_table(report),
        "",
        "Where the clips land on the test clips (share of clips, mean ± sd over seeds; rdfer.experiments."
        "positions). Apex hit: on short_apex clips, the true class's key clip centred in the apex window "
        "(rdfer), or some clip centred in it (the variants without key classes); distractor hit: on "
        "distractor clips, some clip centred in the distractor window; chance: the window's share of the "
        "clip's frames (for 'some of the K clips', placed at random: "
        f"{_any_chance(report)}). Key "
        "positions on the apex: where the synopsis stream's key positions point (true class), whatever the "
        "variant does with them; grid ceiling: short_apex clips whose apex holds one of the synopsis_frames "
        "positions a key can take, the most any key re-sampling can hit.",
        "",
        *position_table(report),
    ]
    checks = targets(report)
    if checks:
        lines += [
            "",
            "Targets of issue 22 (set for `--preset full` at 0% noise), on this report's means:",
            "",
            *checks,
        ]
    return "\n".join(lines) + "\n"


def _any_chance(report: dict) -> str:
    levels = report.get("chance_any_clip") or {}
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in levels.items() if v is not None) or "n/a"


def plot(report: dict, path: Path) -> None:
    """WAR by clip kind per variant (one panel per setting, bars with the seeds' sd), and the apex hit."""
    plt = _pyplot()
    g = groups(report)
    settings = list(dict.fromkeys(s for s, _ in g))
    variants = list(dict.fromkeys(v for _, v in g))
    columns = ["overall", *KINDS]
    fig, axes = plt.subplots(1, len(settings) + 1, figsize=(5 * len(settings) + 4, 4), squeeze=False)
    width = 0.8 / max(len(variants), 1)
    for a, setting in enumerate(settings):
        ax = axes[0][a]
        for i, variant in enumerate(variants):
            runs = g.get((setting, variant), [])
            stats = [stat(runs, lambda r: r["test"]["war"])]
            stats += [stat(runs, lambda r, k=k: r["test"]["by_kind"][k]) for k in KINDS]
            x = np.arange(len(columns)) + (i - (len(variants) - 1) / 2) * width
            heights = [100 * (s[0] if s else 0) for s in stats]
            spread = [100 * (s[1] if s else 0) for s in stats]
            ax.bar(x, heights, width, yerr=spread, label=variant, color=f"C{i}", capsize=2)
        ax.set_xticks(np.arange(len(columns)), columns, fontsize=8)
        ax.set_title(f"clean-test WAR, {setting}", fontsize=9)
        ax.set_ylabel("%")
        ax.grid(axis="y", alpha=0.3)
    ax = axes[0][-1]
    for i, variant in enumerate(variants):
        for j, setting in enumerate(settings):
            s = stat(g.get((setting, variant), []), lambda r: r["hit_rate"]["apex"])
            if s is not None:
                ax.errorbar(
                    [i + 0.15 * j], [100 * s[0]], [100 * s[1]], fmt="os"[j % 2], color=f"C{i}", capsize=2
                )
    chance = stat([r for r in report["runs"]], lambda r: r["hit_rate"]["apex_chance"])
    if chance is not None:
        ax.axhline(100 * chance[0], color="grey", ls="--", lw=1, label="chance")
        ax.legend(fontsize=7)
    ax.set_xticks(np.arange(len(variants)), variants, rotation=45, ha="right", fontsize=7)
    ax.set_title("apex hit on short_apex clips (o: " + ", s: ".join(settings) + ")", fontsize=9)
    ax.set_ylabel("%")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out: Path, variants: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report, variants))
    plot(report, out / "accuracy.png")
