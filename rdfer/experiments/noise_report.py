"""The noise experiment's written report: results.md (tables, the targets met or not) and its two plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdfer.experiments.common import seed_stat
from rdfer.experiments.judge import HARD_REASONS, TRUE_CATEGORIES
from rdfer.robust.categories import CATEGORY_NAMES


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _mean(runs: list[dict], get) -> float | None:
    s = seed_stat(runs, get)
    return None if s is None else s[0]


def _spread(runs: list[dict], get, scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± sd' over the seeds (sample sd; one seed: the value alone)."""
    s = seed_stat(runs, get)
    if s is None:
        return "n/a"
    mean = f"{scale * s[0]:.{digits}f}"
    return mean if s[2] == 1 else f"{mean} ± {scale * s[1]:.{digits}f}"


def by_method(report: dict) -> dict[tuple[str, str], list[dict]]:
    """The runs of each (setting, method) over the seeds, in the report's order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in report["runs"]:
        groups.setdefault((r["setting"], r["method"]), []).append(r)
    return groups


def _last(r: dict) -> float:
    return r["test_last"]["war"]


def _best(r: dict) -> float:
    return r["test_best_war_epoch"]["war"]


def targets(report: dict, method: str = "rdfer") -> list[str]:
    """The issue's targets on the means over the seeds, last epoch, met or not, with the numbers."""
    g = by_method(report)
    mine40, ce40, or40 = (g.get(("symmetric-40", m)) for m in (method, "ce", "oracle"))
    mine0, ce0 = g.get(("symmetric-0", method)), g.get(("symmetric-0", "ce"))
    lines = []
    if mine40:
        war = _mean(mine40, _last)
        a, ah = _mean(mine40, lambda r: r["auroc"]), _mean(mine40, lambda r: r["auroc_noisy_vs_hard"])
        hard = _mean(mine40, lambda r: r["hard_flagged_noisy"])
        if ce40:
            best = _mean(ce40, _best)
            lines.append(
                f"- WAR at least 10 points above CE's best epoch: {_verdict(war - best >= 0.10)} "
                f"({_pct(war)} vs {_pct(best)}: {100 * (war - best):+.1f})"
            )
        if or40:
            top = _mean(or40, _last)
            lines.append(
                f"- WAR within 6 points of the oracle: {_verdict(top - war <= 0.06)} "
                f"({_pct(war)} vs {_pct(top)}: {100 * (war - top):+.1f})"
            )
        lines.append(f"- noisy-vs-clean AUROC >= 0.95: {_verdict((a or 0) >= 0.95)} ({_num(a)})")
        lines.append(f"- noisy-vs-hard AUROC >= 0.90: {_verdict((ah or 0) >= 0.90)} ({_num(ah)})")
        lines.append(
            f"- at most 10% of hard clips flagged noisy: {_verdict(hard is not None and hard <= 0.10)} "
            f"({_pct(hard)}%)"
        )
    if mine0 and ce0:
        war, ce = _mean(mine0, _last), _mean(ce0, _last)
        lines.append(
            f"- at 0% noise, no more than 1 point below CE: {_verdict(ce - war <= 0.01)} "
            f"({_pct(war)} vs {_pct(ce)}: {100 * (war - ce):+.1f})"
        )
    return lines


def memorisation_table(report: dict) -> list[str]:
    """Does cross-entropy fit the wrong labels in this regime? Its last training accuracy on the given labels
    against the clean share, and its test WAR's drop from its best epoch, per setting and seed."""
    lines = [
        "| noise | seed | CE train acc (given labels, last epoch) | clean share | CE best WAR (epoch) "
        "| CE last WAR | drop |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in report["runs"] if r["method"] == "ce"):
        b = r["test_best_war_epoch"]
        lines.append(
            f"| {r['setting']} | {r['noise_seed']} | {_pct(r['history'][-1]['train_acc'])} | "
            f"{_pct(1 - r['realised_noise'])} | {_pct(b['war'])} ({b['epoch']}) | {_pct(_last(r))} | "
            f"{100 * (b['war'] - _last(r)):.1f} |"
        )
    return lines


def dynamics_table(report: dict, setting: str = "symmetric-40") -> list[str]:
    """Which per-sample statistic tells a wrong label from a hard clip: each statistic's AUROC, noisy vs hard
    (noisy vs clean in brackets), per method at `setting`, mean over the seeds."""
    groups = {
        m: runs for (s, m), runs in by_method(report).items() if s == setting and runs[0].get("dynamics")
    }
    if not groups:
        return []
    names = list(next(iter(groups.values()))[0]["dynamics"])
    lines = [
        "| statistic | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for name in names:
        cells = []
        for runs in groups.values():
            hard = _mean(runs, lambda r, n=name: r["dynamics"][n]["noisy_vs_hard"])
            clean = _mean(runs, lambda r, n=name: r["dynamics"][n]["noisy_vs_clean"])
            cells.append(f"{_num(hard)} ({_num(clean)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def headline_table(report: dict) -> list[str]:
    lines = [
        "| noise | method | seeds | last WAR | best WAR | AUROC noisy/clean | AUROC noisy/hard "
        "| hard flagged noisy (%) | precision | recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (setting, method), runs in by_method(report).items():
        lines.append(
            f"| {setting} | {method} | {len(runs)} | {_spread(runs, _last)} | {_spread(runs, _best)} | "
            f"{_spread(runs, lambda r: r['auroc'], 1, 3)} | "
            f"{_spread(runs, lambda r: r['auroc_noisy_vs_hard'], 1, 3)} | "
            f"{_spread(runs, lambda r: r['hard_flagged_noisy'])} | "
            f"{_spread(runs, lambda r: r['precision'], 1, 2)} | "
            f"{_spread(runs, lambda r: r['recall'], 1, 2)} |"
        )
    return lines


def _reasons(by_reason: dict) -> str:
    return " / ".join(_pct(by_reason.get(r)) for r in HARD_REASONS)


def run_table(runs: list[dict]) -> list[str]:
    lines = [
        "| noise | seed | method | last WAR | last UAR | best WAR (epoch) | AUROC noisy/clean "
        "| AUROC noisy/hard "
        "| loss AUROC noisy/clean | loss AUROC noisy/hard | flagged noisy | precision | recall | hard "
        "flagged noisy (intensity / short_apex / distractor) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        b = r["test_best_war_epoch"]
        lines.append(
            f"| {r['setting']} | {r['noise_seed']} | {r['method']} | {_pct(r['test_last']['war'])} | "
            f"{_pct(r['test_last']['uar'])} | {_pct(b['war'])} ({b['epoch']}) | {_num(r['auroc'])} | "
            f"{_num(r['auroc_noisy_vs_hard'])} | {_num(r['loss_auroc'])} | "
            f"{_num(r['loss_auroc_noisy_vs_hard'])} | {r['flagged_noisy']} | {_pct(r['precision'])} | "
            f"{_pct(r['recall'])} | {_pct(r['hard_flagged_noisy'])} "
            f"({_reasons(r['hard_flagged_noisy_by_reason'])}) |"
        )
    return lines


def epoch_table(run: dict) -> list[str]:
    lines = [
        f"seed {run['noise_seed']}, {run['setting']} / {run['method']}:",
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


def markdown(report: dict, methods: dict[str, tuple[list[str], object]]) -> str:
    g = report["generator"]
    used = dict.fromkeys(r["method"] for r in report["runs"])
    minutes = sum(r["seconds"] for r in report["runs"]) / 60
    seeds = ", ".join(str(s) for s in report["noise_seeds"])
    lines = [
        f"# Label-noise experiment ({report['preset']} preset)",
        "",
        f"Command: `{report['command']}`  ",
        f"Device: {report['device']}; {report['date']}; training {minutes:.1f} min (the runs' own times), "
        f"{report['seconds'] / 60:.1f} min for this invocation ({report.get('jobs', 1)} runs at once, reused "
        "runs included).  ",
        f"Data: SynthDFER `{g['preset']}`, generator seed {g['seed']}, fixed before any run: "
        f"{report['train_clips']} train / {report['test_clips']} clean test clips, {report['true_hard']} "
        f"train clips hard by construction. Label noise drawn with seeds {seeds}. WAR/UAR on "
        "the clean test split, in %; 'last' is the last epoch (no test-set selection), 'best' the field's "
        "best-WAR epoch. AUROCs: the method's noise score and the plain per-sample loss (mean over all "
        "epochs), truly noisy against clean (easy and hard) and against hard clips with their right label. "
        "The oracle runs only where some label is wrong (at 0% it is cross-entropy), and 0% runs for the "
        "first noise seed only (no label is flipped whatever the seed, so the runs would repeat).",
        "",
        "Generator: "
        + ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("preset", "seed", "name"))
        + ".  ",
        "Training: the packaged `quick` config with "
        + ", ".join(f"`{o}`" for o in report["preset_overrides"])
        + "; per method "
        + "; ".join(f"{m}: {' '.join(methods[m][0])}{_factory(methods[m][1])}" for m in used)
        + ".",
        "",
        "## Mean and spread over the noise seeds",
        "",
        *headline_table(report),
        "",
    ]
    checks = targets(report)
    if checks:
        lines += [
            "Targets, `rdfer` at 40% symmetric noise unless said, means over the seeds:",
            "",
            *checks,
            "",
        ]
    dyn = dynamics_table(report)
    if dyn:
        lines += [
            "## Which statistic tells a wrong label from a hard clip?",
            "",
            "AUROC noisy vs hard (noisy vs clean), at 40% symmetric noise, mean over the seeds; each "
            "statistic is read from the per-epoch sums the run saved "
            "(rdfer.experiments.judge.dynamics_statistics).",
            "",
            *dyn,
            "",
        ]
    lines += [
        "## Does cross-entropy memorise here?",
        "",
        *memorisation_table(report),
        "",
        "## Per seed",
        "",
        *run_table(report["runs"]),
        "",
        "True category (rows) against the method's last category (easy / hard / noisy):",
        "",
        "| noise | seed | method | true easy | true hard | true noisy |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        cells = [" / ".join(str(r["confusion"][t][f]) for f in CATEGORY_NAMES) for t in TRUE_CATEGORIES]
        lines.append(f"| {r['setting']} | {r['noise_seed']} | {r['method']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per epoch", ""]
    for r in report["runs"]:
        lines += epoch_table(r)
    return "\n".join(lines) + "\n"


def _factory(factory) -> str:
    return "" if factory is None else f" with {factory.__module__}.{factory.__name__}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(report: dict, path: Path) -> None:
    """Left: last-epoch clean-test WAR against the noise rate (mean and sd over the seeds). Right: test WAR
    per epoch at the highest symmetric rate (mean over the seeds), where memorisation shows."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    groups = by_method(report)
    rates = [r["noise_rate"] for r in report["runs"] if r["noise_kind"] == "symmetric"]
    curve_setting = f"symmetric-{round(100 * max(rates))}" if rates else None
    for i, method in enumerate(dict.fromkeys(r["method"] for r in report["runs"])):
        colour = f"C{i}"
        points = {kind: [] for kind in ("symmetric", "pairs")}
        for (_, m), runs in groups.items():
            if m == method:
                wars = [100 * _last(r) for r in runs]
                points[runs[0]["noise_kind"]].append(
                    (100 * runs[0]["noise_rate"], np.mean(wars), np.std(wars))
                )
        for kind, style in (("symmetric", "o-"), ("pairs", "s")):
            if points[kind]:
                x, y, e = zip(*sorted(points[kind]), strict=True)
                left.errorbar(
                    x,
                    y,
                    e,
                    fmt=style,
                    color=colour,
                    capsize=3,
                    mfc="none" if kind == "pairs" else None,
                    label=f"{method} ({kind})",
                )
        runs = groups.get((curve_setting, method), [])
        if runs:
            curves = np.array([[100 * e["test_war"] for e in r["history"]] for r in runs])
            right.plot(np.arange(1, curves.shape[1] + 1), curves.mean(0), color=colour, label=method)
    left.set_xlabel("label noise (%)")
    left.set_ylabel("clean-test WAR, last epoch (%)")
    right.set_xlabel("epoch")
    right.set_ylabel(f"clean-test WAR at {curve_setting} (%)")
    for ax in (left, right):
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
