"""python -m rdfer.experiments.noise: its scoring against hand-made memories, and a reduced run end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rdfer.data.synth import generate, load_ground_truth
from rdfer.experiments import noise
from rdfer.ops.agreement import EASY, HARD, NOISY

# The tiny model of tests/conftest.py's tiny_config, on clean SynthDFER `tiny`.
TINY = ["data.synth_preset=tiny", "data.num_frames=16", "data.batch_size=8", "data.workers=0",
        "model.feature_dim=16", "model.lstm_hidden=8", "model.heads=2", "optim.epochs=3", "robust.warmup=0.34"]


def test_true_categories_put_a_wrong_label_before_hardness():
    true = np.array([0, 1, 2, 3, 4])
    given = np.array([0, 2, 2, 3, 1])
    hard = np.array([False, True, True, False, False])
    assert noise.true_categories(true, given, hard).tolist() == [0, 2, 1, 0, 2]


def test_agreement_report_on_a_hand_made_memory():
    # A, S per sample; truth 0 easy, 1 hard, 2 noisy; the last category the memory gave.
    ema = torch.tensor([[1.0, 0.9], [0.5, 0.5], [1.0, 0.0], [0.75, 0.1], [float("nan")] * 2, [1.0, 0.5]])
    truth = np.array([0, 1, 2, 2, 0, 1])
    flagged = torch.tensor([EASY, NOISY, NOISY, HARD, -1, HARD])
    r = noise.agreement_report(ema, flagged, truth)
    # Scores A(1-S): 0.1, 0.25, 1.0, 0.675, 0 (never seen), 0.5. Noisy {1.0, 0.675} beat all 4 clean ones.
    assert r["auroc"] == 1.0
    assert r["scores"] == {"easy": [0.1, 0.0], "hard": [0.25, 0.5], "noisy": [1.0, 0.675]}
    assert r["confusion"] == {"easy": {"easy": 1, "hard": 0, "noisy": 0},
                              "hard": {"easy": 0, "hard": 1, "noisy": 1},
                              "noisy": {"easy": 0, "hard": 1, "noisy": 1}}
    assert r["never_seen"] == 1
    assert (r["flagged_noisy"], r["precision"], r["recall"], r["hard_flagged_noisy"]) == (2, 0.5, 0.5, 0.5)
    # One noisy score down to 0.02: it beats only the unseen 0, so 4 + 1 of the 8 pairs stay ordered.
    ema[3] = torch.tensor([0.2, 0.9])
    assert noise.agreement_report(ema, flagged, truth)["auroc"] == 5 / 8


def test_no_noisy_samples_leave_auroc_and_precision_undefined():
    r = noise.agreement_report(torch.rand(4, 2), torch.tensor([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    assert r["auroc"] is None and r["precision"] is None and r["recall"] is None


def test_unknown_setting_or_preset_is_a_clear_error(capsys):
    assert noise.main(["--settings", "symmetric-50", "--out", "unused"]) == 2
    assert "symmetric-50" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        noise.main(["--preset", "huge"])


def test_noisy_synthdfer_is_refused(tmp_path, monkeypatch):
    # The experiment flips labels itself; a root whose training labels are already noisy would be judged wrong.
    root = generate("tiny", tmp_path / "noisy", seed=0, noise=0.3, progress=False)
    assert noise.main(["--out", str(tmp_path / "out"), "--no-progress", f"data.root={root}", *TINY]) == 2


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """The reduced experiment the suite runs: every setting and method, 3 epochs of a tiny model on `tiny`."""
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("noise")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RDFER_CACHE", str(cache))
        report = noise.run_experiment("quick", out, overrides=TINY, progress=False, command="test")
    return report, out, cache


def test_reduced_experiment_writes_every_report(reduced):
    report, out, _ = reduced
    assert [(r["setting"], r["method"]) for r in report["runs"]] == [
        (s, m) for s in noise.SETTINGS for m in noise.METHODS]
    for name in ("results.json", "results.md", "accuracy.png", "agreement_hist.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text())["runs"][0]["setting"] == "symmetric-0"
    md = (out / "results.md").read_text()
    assert md.count("| symmetric-40 |") == 9 and "Targets (issue 7)" in md  # 3 tables, 3 methods
    assert report["generator"]["preset"] == "tiny" and report["config"]["data"]["cache"] == "auto"


def test_reduced_experiment_flips_exactly_the_asked_share_and_judges_it(reduced):
    report, _, cache = reduced
    (root,) = (cache / "synth").iterdir()
    hard = sum(t.is_hard for t in load_ground_truth(root) if t.split == "train")
    n = report["train_clips"]
    for r in report["runs"]:
        assert r["realised_noise"] == round(r["noise_rate"] * n) / n
        rows = {t: sum(r["confusion"][t].values()) for t in noise.TRUE_CATEGORIES}  # seen samples only
        assert sum(rows.values()) + r["never_seen"] == n
        assert round(r["noise_rate"] * n) - r["never_seen"] <= rows["noisy"] <= round(r["noise_rate"] * n)
        assert rows["hard"] <= hard
        assert r["auroc"] is None if r["noise_rate"] == 0 else 0.0 <= r["auroc"] <= 1.0
        assert len(r["history"]) == 3


def test_reduced_experiment_methods_differ_only_after_the_warm_up(reduced):
    runs = {(r["setting"], r["method"]): r["history"] for r in reduced[0]["runs"]}
    ce, weighting = runs["symmetric-40", "ce"], runs["symmetric-40", "weighting"]
    assert ce[0]["loss"] == weighting[0]["loss"]  # warm-up epoch: every weight 1 in both
    assert ce[-1]["loss"] != weighting[-1]["loss"]


def test_finished_runs_are_reused(reduced, monkeypatch):
    report, out, cache = reduced
    monkeypatch.setenv("RDFER_CACHE", str(cache))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("rdfer.train.train", no_training)
    again = noise.run_experiment("quick", out, overrides=TINY, progress=False, command="test")
    assert [r["test_last"] for r in again["runs"]] == [r["test_last"] for r in report["runs"]]


def test_clip_vote_diagnostic_is_in_every_run(reduced):
    for r in reduced[0]["runs"]:
        v = r["clip_votes"]
        assert set(v) == {"video_equals_label", "majority_equals_label", "majority_equals_video",
                          "agreement_at_least_a_min", "mean_clip_max_prob"}
        assert all(0.0 <= x <= 1.0 for x in v.values())
        assert v["mean_clip_max_prob"] >= 1 / 7 - 1e-6  # a max-probability is never below uniform
