"""The noise experiment's written report: results.md (tables, the targets met or not) and its two plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdfer.experiments.judge import HARD_REASONS, TRUE_CATEGORIES
from rdfer.ops.agreement import CATEGORY_NAMES


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(report: dict) -> list[str]:
    """The targets at 40% symmetric noise and at 0%, on the last epoch, met or not, with the numbers."""
    runs = {(r["setting"], r["method"]): r for r in report["runs"]}
    r40, r0 = runs.get(("symmetric-40", "rdfer")), runs.get(("symmetric-0", "rdfer"))
    ce40, ce0, sl40 = (
        runs.get(("symmetric-40", "ce")),
        runs.get(("symmetric-0", "ce")),
        runs.get(("symmetric-40", "small-loss")),
    )
    lines = []
    if r40 is not None:
        a, ah, lh = r40["auroc"], r40["auroc_noisy_vs_hard"], r40["loss_auroc_noisy_vs_hard"]
        lines.append(f"- noisy-vs-clean AUROC >= 0.95: {_verdict((a or 0) >= 0.95)} ({_num(a)})")
        lines.append(
            f"- noisy-vs-hard AUROC >= 0.90 and above the plain loss's: "
            f"{_verdict((ah or 0) >= 0.90 and (ah or 0) > (lh or 0))} ({_num(ah)}; plain loss {_num(lh)})"
        )
        hard = r40["hard_flagged_noisy"]
        lines.append(
            f"- at most 10% of hard clips flagged noisy: {_verdict(hard is not None and hard <= 0.10)} "
            f"({_pct(hard)}%)"
        )
        war = r40["test_last"]["war"]
        if ce40 is not None:
            best = ce40["test_best_war_epoch"]["war"]
            lines.append(
                f"- WAR at least 5 points above CE's best epoch: {_verdict(war - best >= 0.05)} "
                f"({_pct(war)} vs {_pct(best)}: {100 * (war - best):+.1f})"
            )
        if r0 is not None:
            clean = r0["test_last"]["war"]
            lines.append(
                f"- WAR within 5 points of rdfer on clean labels: {_verdict(clean - war <= 0.05)} "
                f"({_pct(war)} vs {_pct(clean)}: {100 * (war - clean):+.1f})"
            )
        if sl40 is not None:
            other = sl40["test_last"]["war"]
            lines.append(
                f"- at least as good as small-loss: {_verdict(war >= other)} "
                f"({_pct(war)} vs {_pct(other)}: {100 * (war - other):+.1f})"
            )
    if r0 is not None and ce0 is not None:
        war, ce = r0["test_last"]["war"], ce0["test_last"]["war"]
        lines.append(
            f"- at 0% noise, no more than 1 point below CE: {_verdict(ce - war <= 0.01)} "
            f"({_pct(war)} vs {_pct(ce)}: {100 * (war - ce):+.1f})"
        )
    return lines


def _reasons(by_reason: dict) -> str:
    return " / ".join(_pct(by_reason.get(r)) for r in HARD_REASONS)


def run_table(runs: list[dict]) -> list[str]:
    lines = [
        "| noise | method | last WAR | last UAR | best WAR (epoch) | AUROC noisy/clean | AUROC noisy/hard "
        "| loss AUROC noisy/clean | loss AUROC noisy/hard | flagged noisy | precision | recall | hard "
        "flagged noisy (intensity / short_apex / distractor) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        b = r["test_best_war_epoch"]
        lines.append(
            f"| {r['setting']} | {r['method']} | {_pct(r['test_last']['war'])} | "
            f"{_pct(r['test_last']['uar'])} | {_pct(b['war'])} ({b['epoch']}) | {_num(r['auroc'])} | "
            f"{_num(r['auroc_noisy_vs_hard'])} | {_num(r['loss_auroc'])} | "
            f"{_num(r['loss_auroc_noisy_vs_hard'])} | {r['flagged_noisy']} | {_pct(r['precision'])} | "
            f"{_pct(r['recall'])} | {_pct(r['hard_flagged_noisy'])} "
            f"({_reasons(r['hard_flagged_noisy_by_reason'])}) |"
        )
    return lines


def epoch_table(run: dict) -> list[str]:
    lines = [
        f"{run['setting']} / {run['method']}:",
        "",
        "| epoch | warm | test WAR | AUROC noisy/clean | noisy/hard | loss AUROC noisy/clean | noisy/hard | "
        "flagged | precision | recall | hard flagged (int / short / distr) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in run["epochs"]:
        lines.append(
            f"| {e['epoch']} | {'yes' if e['warm'] else 'no'} | {_pct(e['test_war'])} | {_num(e['auroc'])} | "
            f"{_num(e['auroc_noisy_vs_hard'])} | {_num(e['loss_auroc'])} | "
            f"{_num(e['loss_auroc_noisy_vs_hard'])} | {e['flagged_noisy']} | {_pct(e['precision'])} | "
            f"{_pct(e['recall'])} | {_pct(e['hard_flagged_noisy'])} "
            f"({_reasons(e['hard_flagged_noisy_by_reason'])}) |"
        )
    return [*lines, ""]


def markdown(report: dict, methods: dict[str, list[str]]) -> str:
    g = report["generator"]
    used = dict.fromkeys(r["method"] for r in report["runs"])
    minutes = sum(r["seconds"] for r in report["runs"]) / 60
    lines = [
        f"# Label-noise experiment ({report['preset']} preset)",
        "",
        f"Command: `{report['command']}`  ",
        f"Device: {report['device']}; {report['date']}; training {minutes:.1f} min (the runs' own times), "
        f"{report['seconds'] / 60:.1f} min for this invocation (reused runs included).  ",
        f"Data: SynthDFER `{g['preset']}`, generator seed {g['seed']}, fixed before any run: "
        f"{report['train_clips']} train / {report['test_clips']} clean test clips, {report['true_hard']} "
        f"train clips hard by construction. Label noise drawn with seed {report['noise_seed']}. WAR/UAR on "
        "the clean test split, in %; 'last' is the last epoch (no test-set selection), 'best' the field's "
        "best-WAR epoch. AUROCs: the method's noise score and the plain per-sample loss (mean over all "
        "epochs), truly noisy against clean (easy and hard) and against hard clips with their right label.",
        "",
        "Generator: "
        + ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("preset", "seed", "name"))
        + ".  ",
        "Training: the packaged `quick` config with "
        + ", ".join(f"`{o}`" for o in report["preset_overrides"])
        + "; per method "
        + "; ".join(f"{m}: {' '.join(methods[m])}" for m in used)
        + ".",
        "",
        *run_table(report["runs"]),
        "",
        "True category (rows) against the method's last category (easy / hard / noisy):",
        "",
        "| noise | method | true easy | true hard | true noisy |",
        "|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        cells = [" / ".join(str(r["confusion"][t][f]) for f in CATEGORY_NAMES) for t in TRUE_CATEGORIES]
        lines.append(f"| {r['setting']} | {r['method']} | " + " | ".join(cells) + " |")
    checks = targets(report)
    if checks:
        lines += [
            "",
            "Targets of the robustness claim, `rdfer` at 40% symmetric noise unless said, last epoch:",
            "",
            *checks,
        ]
    lines += ["", "## Per epoch", ""]
    for r in report["runs"]:
        lines += epoch_table(r)
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(report: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in report["runs"])):
        mine = [r for r in report["runs"] if r["method"] == method]
        sym = sorted((r["noise_rate"], r["test_last"]["war"]) for r in mine if r["noise_kind"] == "symmetric")
        colour = f"C{i}"
        if sym:
            ax.plot(
                [100 * x for x, _ in sym],
                [100 * y for _, y in sym],
                "o-",
                color=colour,
                label=f"{method} (symmetric)",
            )
        for r in (r for r in mine if r["noise_kind"] == "pairs"):
            ax.plot(
                [100 * r["noise_rate"]],
                [100 * r["test_last"]["war"]],
                "s",
                color=colour,
                mfc="none",
                label=f"{method} (pairs)",
            )
    ax.set_xlabel("label noise (%)")
    ax.set_ylabel("clean-test WAR, last epoch (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_histograms(results: list[dict], path: Path) -> None:
    """Noise-score histograms by true category, one panel per run."""
    plt = _pyplot()
    settings = list(dict.fromkeys(r["setting"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    fig, axes = plt.subplots(
        len(settings), len(methods), figsize=(3.2 * len(methods), 2.4 * len(settings)), squeeze=False
    )
    for r in results:
        ax = axes[settings.index(r["setting"])][methods.index(r["method"])]
        values = [s for t in TRUE_CATEGORIES for s in r["scores"][t]]
        bins = np.linspace(min(values, default=0), max(values, default=1) + 1e-6, 25)
        for t in TRUE_CATEGORIES:
            if r["scores"][t]:
                ax.hist(
                    r["scores"][t], bins=bins, alpha=0.5, density=True, label=f"{t} ({len(r['scores'][t])})"
                )
        ax.set_title(f"{r['setting']} / {r['method']}: AUROC {_num(r['auroc'], 2)}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("noise score")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
