"""python -m rdfer.experiments.noise: judging against hand-made selector states, and a reduced run end to end
on a small SynthDFER `noise` dataset where the network learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rdfer import checkpoint
from rdfer.config import load_config
from rdfer.data.synth import generate, load_ground_truth
from rdfer.data.synth.noise import flip_labels
from rdfer.experiments import judge, noise
from rdfer.metrics import auroc
from rdfer.robust.categories import EASY, HARD, NOISY
from rdfer.robust.selector import EpochNotes, StatsSelector
from rdfer.robust.stats import LOSS, SampleStats


def test_true_categories_put_a_wrong_label_before_hardness():
    true = np.array([0, 1, 2, 3, 4])
    given = np.array([0, 2, 2, 3, 1])
    hard = np.array([False, True, True, False, False])
    assert judge.true_categories(true, given, hard).tolist() == [0, 2, 1, 0, 2]


class _Fixed(StatsSelector):
    """A selector whose score and categories are set by hand (decide keeps them)."""

    def decide(self, epoch):
        return EpochNotes()


def _hand_made(robust) -> StatsSelector:
    # Six samples, one epoch: losses 0.1, 2.0, 3.0, 1.0, 0.5, 2.5; truth easy, hard, noisy, noisy, easy, hard.
    sel = _Fixed(robust, 6, epochs=1)
    rows = torch.zeros(6, 4 + 3)
    rows[:, LOSS] = torch.tensor([0.1, 2.0, 3.0, 1.0, 0.5, 2.5])
    sel.commit(torch.arange(6), torch.cat([rows, torch.zeros(6, 1)], 1), torch.tensor(True))
    sel.end_epoch(0)
    sel.score = torch.tensor([0.0, 0.2, 0.9, 0.8, 0.1, 0.3])
    sel.category = torch.tensor([EASY, HARD, NOISY, EASY, EASY, NOISY])
    return sel


def test_judge_on_a_hand_made_selector():
    sel = _hand_made(load_config(None).robust)
    truth = np.array([0, 1, 2, 2, 0, 1])
    reasons = np.array(["", "intensity", "", "distractor", "", "short_apex"])
    r = judge.judge(sel, truth, reasons, [{"test_war": 0.5, "test_uar": 0.4, "warm": True}])
    # The score puts both noisy samples above the 4 clean ones; the loss: 3.0 above all, 1.0 above 0.1, 0.5.
    assert r["auroc"] == 1.0 and r["auroc_noisy_vs_hard"] == 1.0
    assert r["loss_auroc"] == pytest.approx(6 / 8) and r["loss_auroc_noisy_vs_hard"] == pytest.approx(2 / 4)
    assert (r["flagged_noisy"], r["precision"], r["recall"], r["hard_flagged_noisy"]) == (2, 0.5, 0.5, 0.5)
    assert r["hard_flagged_noisy_by_reason"] == {"intensity": 0.0, "short_apex": 1.0, "distractor": None}
    assert r["confusion"]["noisy"] == {"easy": 1, "hard": 0, "noisy": 1}
    (epoch,) = r["epochs"]  # the history holds the score and categories end_epoch saw (all easy, score 0)
    assert epoch["test_war"] == 0.5 and epoch["flagged_noisy"] == 0 and epoch["auroc"] == 0.5
    assert epoch["loss_auroc"] == r["loss_auroc"]


def test_no_noisy_samples_leave_auroc_and_precision_undefined():
    t = torch.tensor([0, 0, 1, 1])
    assert judge.aurocs(torch.rand(4), torch.rand(4), t) == dict.fromkeys(
        ("auroc", "auroc_noisy_vs_hard", "loss_auroc", "loss_auroc_noisy_vs_hard")
    )
    f = judge.flags(torch.tensor([0, 2, 0, 1]), t, np.array(["", "", "intensity", "intensity"]))
    assert f["precision"] == 0.0 and f["recall"] is None and f["hard_flagged_noisy"] == 0.0


def test_unknown_setting_seed_or_preset_is_a_clear_error(capsys):
    assert noise.main(["--settings", "symmetric-50", "--out", "unused"]) == 2
    assert "symmetric-50" in capsys.readouterr().err
    assert noise.main(["--methods", "mixup", "--out", "unused"]) == 2
    assert "mixup" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        noise.main(["--noise-seeds", "0,a", "--out", "unused"])
    assert usage.value.code == 2
    assert "--noise-seeds: takes comma-separated integers, got '0,a'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        noise.main(["--preset", "huge"])


# A small `noise` dataset (280 train / 105 test clips) and a schedule on which the quick network learns.
SMALL = dict(train_per_class=40, test_per_class=15, frames=(16, 24), train_identities=30, test_identities=10)
RUN = ["optim.epochs=10", "data.workers=0"]  # measured: CE 40% WAR at 0% noise; at 40%, CE 24, oracle 35


def test_noisy_synthdfer_is_refused(tmp_path):
    # The experiment flips labels itself; a root with noisy training labels would be judged wrong.
    root = generate("tiny", tmp_path / "noisy", seed=0, noise=0.3, progress=False)
    assert noise.main(["--out", str(tmp_path / "out"), "--no-progress", f"data.root={root}"]) == 2


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """Every default method at 0% and 40% symmetric noise, 10 epochs on the small dataset."""
    cache = tmp_path_factory.mktemp("cache")
    root = generate("noise", cache / "small", seed=0, noise=0.0, progress=False, workers=2, **SMALL)
    out = tmp_path_factory.mktemp("noise")
    overrides = [f"data.root={root}", *RUN]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RDFER_CACHE", str(cache))
        torch.set_num_threads(1)
        report = noise.run_experiment(
            "quick", out, overrides=overrides, noise_seeds=[0], progress=False, command="test"
        )
    return report, out, root, overrides, cache


@pytest.mark.slow
def test_reduced_experiment_writes_every_report(reduced):
    report, out, *_ = reduced
    assert [(r["setting"], r["method"]) for r in report["runs"]] == [
        (s, m)
        for s in ("symmetric-0", "symmetric-40")
        for m in noise.DEFAULT_METHODS
        if (s, m) != ("symmetric-0", "oracle")  # no wrong label: the oracle would be cross-entropy
    ]
    for name in ("results.json", "results.md", "accuracy.png", "scores_hist.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    for r in saved["runs"]:
        assert {
            "setting",
            "method",
            "test_last",
            "test_best_war_epoch",
            "auroc",
            "hard_flagged_noisy",
            "auroc_noisy_vs_hard",
            "loss_auroc",
            "loss_auroc_noisy_vs_hard",
            "hard_flagged_noisy_by_reason",
        } <= set(r)
        assert [e["epoch"] for e in r["epochs"]] == list(range(1, 11))
    md = (out / "results.md").read_text()
    assert "Targets, `rdfer` at 40%" in md and "at 0% noise, no more than 1 point below CE" in md
    assert "Does cross-entropy memorise here?" in md and "Mean and spread over the noise seeds" in md
    assert report["generator"]["preset"] == "noise" and report["config"]["data"]["cache"] == "auto"


@pytest.mark.slow
def test_the_network_learns_and_the_oracle_beats_ce(reduced):
    runs = {(r["setting"], r["method"]): r for r in reduced[0]["runs"]}
    assert runs["symmetric-0", "ce"]["test_last"]["war"] > 0.3  # chance is 1/7
    assert (
        runs["symmetric-40", "oracle"]["test_last"]["war"]
        > runs["symmetric-40", "ce"]["test_last"]["war"] + 0.05
    )
    oracle = runs["symmetric-40", "oracle"]
    assert (oracle["precision"], oracle["recall"], oracle["hard_flagged_noisy"]) == (1.0, 1.0, 0.0)


@pytest.mark.slow
def test_reported_numbers_are_the_saved_states(reduced):
    report, out, root, *_ = reduced
    truths = [t for t in load_ground_truth(root) if t.split == "train"]
    true = np.array([t.true_index for t in truths])
    for r in report["runs"]:
        given = flip_labels(true, r["noise_rate"], r["noise_kind"], r["noise_seed"])
        assert r["realised_noise"] == pytest.approx(round(r["noise_rate"] * len(true)) / len(true))
        state = checkpoint.load(out / "seed0" / r["setting"] / r["method"] / "last.pt")["selector"]
        stats = state["stats"]
        loss = (stats["sums"][..., LOSS].sum(0) / stats["counts"].sum(0)).nan_to_num(0.0)
        noisy = torch.as_tensor(given != true)
        flagged = state["category"] == NOISY
        assert r["flagged_noisy"] == int(flagged.sum())
        assert torch.equal(stats["labels"], torch.as_tensor(given))  # the statistics saw the flipped labels
        if noisy.any():
            assert r["loss_auroc"] == pytest.approx(auroc(loss, noisy))
            assert r["auroc"] == pytest.approx(auroc(state["score"], noisy))
            assert r["recall"] == pytest.approx(float((flagged & noisy).sum() / noisy.sum()))
        assert r["epochs"][-1]["test_war"] == r["test_last"]["war"]


@pytest.mark.slow
def test_finished_runs_are_reused(reduced, monkeypatch):
    report, out, _, overrides, cache = reduced
    monkeypatch.setenv("RDFER_CACHE", str(cache))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("rdfer.training.train", no_training)
    again = noise.run_experiment(
        "quick", out, overrides=overrides, noise_seeds=[0], progress=False, command="test"
    )
    assert [r["test_last"] for r in again["runs"]] == [r["test_last"] for r in report["runs"]]


@pytest.mark.slow
def test_runs_in_worker_processes_match_runs_in_this_one(reduced, tmp_path, monkeypatch):
    # Two noise seeds, two epochs, two runs at once: each worker's run is the in-process run, bit for bit.
    _, _, root, _, cache = reduced
    monkeypatch.setenv("RDFER_CACHE", str(cache))
    args = dict(
        settings=["symmetric-40"],
        methods=["ce", "oracle"],
        overrides=[f"data.root={root}", "optim.epochs=2", "data.workers=0"],
        noise_seeds=[3, 4],
        progress=False,
    )
    here = noise.run_experiment("quick", tmp_path / "here", jobs=1, **args)
    there = noise.run_experiment("quick", tmp_path / "there", jobs=2, **args)
    key = lambda r: (r["noise_seed"], r["method"], r["test_last"], r["auroc"], r["flagged_noisy"])  # noqa: E731
    assert [key(r) for r in there["runs"]] == [key(r) for r in here["runs"]]
    assert {r["noise_seed"] for r in there["runs"]} == {3, 4} and there["jobs"] == 2
    assert (tmp_path / "there" / "seed4" / "symmetric-40" / "oracle" / "train.log").stat().st_size > 0
    assert "± " in (tmp_path / "there" / "results.md").read_text()  # the spread over two seeds
    # At 0% noise every seed flips nothing: the setting runs for the first seed only.
    clean = noise.run_experiment("quick", tmp_path / "clean", jobs=2, **{**args, "settings": ["symmetric-0"]})
    assert [(r["noise_seed"], r["method"]) for r in clean["runs"]] == [(3, "ce")]


def test_training_dynamics_statistics_by_hand():
    # Two classes, three epochs. Sample 0 (label 0): predicted 1, 1, 0 (p_label .2 .4 .6). Sample 1 (label 1):
    # predicted 0 every epoch (p_label .1). Sample 2 (label 0): unseen in epoch 2.
    stats = SampleStats(3)
    p_label = [[0.2, 0.1, 0.9], [0.4, 0.1, 0.0], [0.6, 0.1, 0.7]]
    labels = torch.tensor([0, 1, 0])
    for epoch, p in enumerate(p_label):
        p = torch.tensor(p)
        probs = torch.stack([torch.where(labels == 0, p, 1 - p), torch.where(labels == 0, 1 - p, p)], 1)
        rows = torch.zeros(3, 4)
        rows[:, LOSS] = -p.log()
        ok = torch.tensor([True, True, epoch != 1])
        stats.add(torch.arange(3)[ok], torch.cat([rows, probs], 1)[ok], labels[ok], torch.tensor(True))
        stats.close_epoch()
    s = judge.dynamics_statistics(stats)
    assert s["Data Maps confidence (1 - mean p_label)"].tolist() == pytest.approx([0.6, 0.9, 0.2])
    sd0 = float(np.std([0.2, 0.4, 0.6]))
    assert s["Data Maps variability (sd of p_label)"][[0, 1]].tolist() == pytest.approx([sd0, 0.0], abs=1e-6)
    assert s["epochs on one other class"].tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert s["forgetting (prediction changes)"][[0, 1]].tolist() == pytest.approx([0.5, 0.0])
    assert s["mean loss"][2] == pytest.approx(float(-(torch.tensor(0.9).log() + torch.tensor(0.7).log()) / 2))
    truth = torch.tensor([1, 2, 0])
    d = judge.dynamics(stats, truth)
    assert d["Data Maps confidence (1 - mean p_label)"] == {"noisy_vs_clean": 1.0, "noisy_vs_hard": 1.0}
