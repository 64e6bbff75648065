"""python -m rdfer.experiments.architecture: the variants' clip placements, the peer, the hit rates against
hand-made ground truth, and a reduced run end to end on a small SynthDFER `noise` dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_model import CLASSES, frames, small_config  # pytest puts tests/ on the path

from rdfer.config import ConfigError
from rdfer.data.synth import ClipTruth, generate
from rdfer.experiments import architecture
from rdfer.experiments.architecture_report import stat, targets
from rdfer.experiments.positions import (
    ApexPlacer,
    any_clip_chance,
    apex_centers,
    grid_hits,
    hit_rates,
    inside,
    loaded_span,
    source_frame,
)
from rdfer.models import RDFER
from rdfer.models.peer import MILPeer
from rdfer.models.placement import random_centers, top_class_centers, uniform_centers
from rdfer.ops.resample import clip_indices_reference


def truth(reason="short_apex", n=20, apex=(9, 10), distractor=None, true_label=1) -> ClipTruth:
    d0, d1 = distractor or (None, None)
    return ClipTruth(
        "test", 1, true_label, true_label, False, reason != "", reason, 0.8, apex[0] - 1, apex[0], apex[1],
        apex[1] + 1, 3 if distractor else None, d0, d1, 0.8 if distractor else None, n, 0,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- where clips land


def test_a_centre_shows_the_source_frame_the_loader_put_there():
    # 20 source frames on a 16-frame timeline: loaded frame i shows source frame floor(i * 20 / 16) + 1.
    assert [source_frame(p, 20, 16) for p in (0, 1, 2.4, 2.6, 15, 99, -3)] == [1, 2, 3, 4, 19, 19, 1]
    assert inside(6.6, 9, 10, 20, 16)  # loaded 7 -> source 9
    assert not inside(6.4, 9, 10, 20, 16) and not inside(6.6, None, None, 20, 16)


def test_loaded_span_and_apex_centres_stay_on_the_window():
    assert loaded_span(9, 10, 20, 16) == (7, 7)  # loaded 7 shows 9; source 10 is skipped at this rate
    assert loaded_span(3, 6, 8, 16) == (4, 11)  # short clip: each source frame shown twice
    assert loaded_span(10, 10, 40, 16) == (4, 4)  # source 10 is never shown: the nearest loaded frame
    for lo, hi in ((7, 7), (4, 11), (3, 4)):
        c = apex_centers(lo, hi, 4)
        assert np.all((np.floor(c + 0.5) >= lo) & (np.floor(c + 0.5) <= hi)), (lo, hi, c)


def test_hit_rates_on_hand_made_clips():
    rows = [
        truth(apex=(9, 10)),  # loaded 7
        truth(apex=(1, 2)),  # loaded 0..1
        truth("distractor", apex=(1, 8), distractor=(15, 18)),  # distractor at loaded 11..14
        truth("", apex=(3, 12)),
    ]
    centers = np.array([[7.0, 0.0, 3.0, 12.0], [7.0, 9.0, 3.0, 12.0], [2.0, 12.0, 4.0, 5.0], [0.0] * 4])
    classes = np.array([[0, 2, 3, 4], [0, 2, 3, 4], [0, 2, 3, 4], [0, 2, 3, 4]])
    rate, details = hit_rates(rows, centers, classes, 16)
    # Clip 0: the true class (0) is on the apex; clip 1: its key is at loaded 7, not on frames 1-2.
    assert rate["apex"] == 0.5 and details["apex_any_clip"] == 0.5
    assert rate["apex_chance"] == pytest.approx(2 / 20)
    assert rate["distractor"] == 1.0 and rate["distractor_chance"] == pytest.approx(4 / 20)
    assert details["distractor_clips_apex"] == 1.0  # true class 0's key at loaded 2 -> source 3, in 1..8
    assert details["apex_true_class_in_keys"] == 1.0
    rate, details = hit_rates(rows, centers, np.full((4, 4), 6), 16)  # the true class among no key
    assert rate["apex"] == 0.0 and details["apex_any_clip"] == 0.5 and details["apex_true_class_in_keys"] == 0
    assert hit_rates(rows, centers, None, 16)[0]["apex"] == 0.5  # no classes: any clip counts


def test_the_grid_ceiling_counts_apexes_a_synopsis_position_can_reach():
    # 8 positions on 16 frames: loaded 1.5 -> 2, 5.5 -> 6, ...; 20 source frames: loaded 2 shows 3, 6 shows 8.
    assert grid_hits([truth(apex=(3, 3)), truth(apex=(4, 5)), truth(apex=(8, 9))], 8, 16) == pytest.approx(
        2 / 3
    )
    assert grid_hits([], 8, 16) is None


def test_apex_placer_centres_train_and_test_clips_on_their_own_apex():
    placer = ApexPlacer([truth(apex=(9, 10)), truth("", apex=(0, 0))], [truth(apex=(1, 2))], 4, 16)
    train = placer(torch.tensor([1, 0]), True, 16)
    assert torch.equal(train[1].round(), torch.full((4,), 7.0))
    assert torch.allclose(train[0], torch.tensor([1.5, 5.5, 9.5, 13.5]))  # neutral: evenly spaced
    assert torch.all(placer(torch.tensor([0]), False, 16).add(0.5).floor() <= 1)
    with pytest.raises(ValueError, match="sample ids"):
        placer(None, True, 16)


# ------------------------------------------------------------------------------------------- model variants


def test_uniform_and_random_placements():
    assert torch.allclose(uniform_centers(2, 4, 16), torch.tensor([[1.5, 5.5, 9.5, 13.5]] * 2))
    ids = torch.tensor([3, 5, 3])
    test = random_centers(3, 4, 16, train=False, sample_ids=ids)
    assert torch.equal(test[0], test[2]) and not torch.equal(test[0], test[1])  # fixed per clip
    assert torch.equal(test, random_centers(3, 4, 16, train=False, sample_ids=ids))
    assert torch.all(test[:, 1:] >= test[:, :-1]) and test.min() >= 0 and test.max() <= 15
    g = torch.Generator().manual_seed(0)
    a, b = random_centers(3, 4, 16, True, generator=g), random_centers(3, 4, 16, True, generator=g)
    assert not torch.equal(a, b)  # a fresh draw per training step


def test_top_class_clips_sit_on_the_peaks_of_the_class_that_peaks_highest():
    probs = torch.full((1, 8, 3), 0.1)
    probs[0, [1, 6], 0] = 0.5  # class 0 peaks at 0.5
    probs[0, [2, 3, 4, 5], 1] = torch.tensor([0.6, 0.3, 0.4, 0.2])  # class 1 peaks highest, at 2 then 4, 3
    # Instances 2, 3, 4 and one of the 0.1s in time order, on 16 frames: (i + 0.5) * 2 - 0.5.
    centers = top_class_centers(probs, 3, 16)
    assert torch.equal(centers, torch.tensor([[4.5, 6.5, 8.5]]))
    with pytest.raises(ValueError, match="K"):
        top_class_centers(probs, 9, 16)


@pytest.mark.parametrize("how", ["uniform", "random", "top"])
def test_the_detail_clips_go_where_the_variant_says(how):
    model = RDFER(small_config(**{"model.detail_clips": how}), CLASSES).eval()
    out = model(frames(), sample_ids=torch.tensor([0, 1, 2]))
    expected = {
        "uniform": uniform_centers(3, 4, 16),
        "random": random_centers(3, 4, 16, False, torch.arange(3)),
        "top": top_class_centers(out["synopsis_instance_logits"].float().softmax(-1), 4, 16),
    }
    assert torch.equal(out["clip_centers"], expected[how])
    assert torch.equal(
        out["clip_indices"], clip_indices_reference(expected[how], torch.full((3, 4), 4.0), 2, 16)
    )
    keyed = RDFER(small_config(), CLASSES).eval()
    assert torch.equal(keyed(frames())["clip_centers"], keyed(frames())["key_positions"])


def test_synopsis_only_builds_no_detail_stream_and_predicts_from_the_synopsis():
    model = RDFER(small_config(**{"model.detail_clips": "off"}), CLASSES).eval()
    assert not any(n.startswith(("detail", "channel_attention")) for n, _ in model.named_parameters())
    out = model(frames())
    assert torch.equal(out["logits"], out["synopsis_video_logits"])
    assert "clip_indices" not in out
    with pytest.raises(ConfigError, match="learned_positions"):
        small_config(**{"model.detail_clips": "off", "model.learned_positions": "true"})


def test_the_clip_placer_replaces_the_key_positions_in_training_and_at_test():
    model = RDFER(small_config(), CLASSES)
    model.clip_placer = lambda ids, training, t: torch.full((len(ids), 4), 9.0 if training else 3.0)
    ids = torch.arange(3)
    assert torch.all(model.train()(frames(), sample_ids=ids)["clip_centers"] == 9.0)
    assert torch.all(model.eval()(frames(), sample_ids=ids)["clip_indices"][..., 0] == 1)  # 3 - 2 (stride 4)


def test_training_and_evaluation_hand_the_sample_ids_to_the_model():
    # The hook the oracle and random-clips' test positions rely on: train_step and predict_loader pass each
    # batch's sample ids, and the model knows whether it is training.
    from rdfer import distributed
    from rdfer.data.records import ClipRecord, Split
    from rdfer.evaluation import predict_loader
    from rdfer.training import EpochTotals, learner, train_step

    seen = []

    def make(cfg, classes):
        model = RDFER(cfg, classes)
        model.clip_placer = lambda ids, training, t: seen.append((ids.tolist(), training)) or torch.ones(3, 4)
        return model

    cfg = small_config(**{"data.batch_size": 3, "run.out": "unused", "optim.epochs": 1})
    split = Split("t", "train", CLASSES, [ClipRecord(i, str(i), "unused", i % 7) for i in range(6)])
    run = learner(cfg, distributed.World(), torch.device("cpu"), split, make_model=make)
    batch = {"frames": frames(), "label": torch.tensor([0, 1, 2]), "sample_id": torch.tensor([5, 0, 3])}
    train_step(run, batch, EpochTotals(torch.device("cpu")))
    test_batch = {**batch, "sample_id": torch.tensor([2, 4, 1]), "skipped": []}
    predict_loader(run.model, [test_batch], torch.device("cpu"), cfg.run)
    assert seen == [([5, 0, 3], True), ([2, 4, 1], False)]


def test_the_peer_encodes_the_same_frame_budget_and_trains_every_parameter():
    torch.manual_seed(0)
    cfg = small_config()
    model = MILPeer(cfg, CLASSES)
    out = model(frames())
    assert (model.frames, model.instances) == (8 + 4 * 2, 4)  # RDFER: 8 synopsis + 4 clips of 2 frames
    assert out["logits"].shape == (3, 7) and out["detail_instance_logits"].shape == (3, 4, 7)
    assert torch.equal(model.eval()(frames())["clip_indices"].flatten(1)[0], torch.arange(16))  # centres
    model.train()(frames())["logits"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="instances of 4"):
        MILPeer(small_config(**{"model.clip_length": 3}), CLASSES)


# ------------------------------------------------------------------------------------------- the report


def _row(variant, war, kinds, hit=None, rate=100.0, seed=0):
    test = {
        "war": war,
        "uar": war,
        "by_kind": dict(zip(("easy", "intensity", "short_apex", "distractor"), kinds, strict=True)),
    }
    hit_rate = (
        None
        if hit is None
        else {"apex": hit, "apex_chance": 0.1, "distractor": 0.5, "distractor_chance": 0.2}
    )
    return {"variant": variant, "setting": "symmetric-0", "seed": seed, "test": test, "hit_rate": hit_rate,
            "clips_per_s": rate}  # fmt: skip


def test_targets_read_the_means_over_seeds():
    runs = [
        _row("rdfer", 0.80, (0.9, 0.5, 0.60, 0.70), hit=0.7, rate=90, seed=0),
        _row("rdfer", 0.70, (0.9, 0.5, 0.50, 0.60), hit=0.9, rate=110, seed=1),
        _row("uniform-clips", 0.74, (0.9, 0.5, 0.52, 0.64), hit=0.3),
        _row("apex-clips", 0.78, (0.9, 0.5, 0.60, 0.70), hit=1.0),
        _row("peer", 0.70, (0.9, 0.4, 0.50, 0.66), rate=120),
    ]
    assert stat(runs[:2], lambda r: r["test"]["war"]) == pytest.approx((0.75, 0.0707107, 2))
    lines = targets({"runs": runs})
    assert lines[0].startswith("- key-position hit rate on short_apex >= 0.8: met (0.80; chance 0.10)")
    assert "on short_apex: met (55.0 vs 52.0: +3.0)" in lines[1]
    assert "on distractor: NOT met (65.0 vs 64.0: +1.0)" in lines[2]
    assert "apex-clips overall: NOT met (75.0 vs 78.0: -3.0)" in lines[3]
    assert "hard reason: NOT met" in lines[4] and "cost per clip: NOT met (100 vs 120 clips/s)" in lines[4]


# ------------------------------------------------------------------------------------------- end to end

SMALL = dict(train_per_class=10, test_per_class=6, frames=(16, 24), train_identities=10, test_identities=5)
RUN = ["optim.epochs=1", "run.eval_every=1", "data.workers=0"]  # structure and bookkeeping, not learning


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """Every variant at 0% and 20% noise, one seed, one epoch, on 70 train / 42 test clips."""
    cache = tmp_path_factory.mktemp("cache")
    root = generate("noise", cache / "small", seed=0, noise=0.0, progress=False, workers=2, **SMALL)
    out = tmp_path_factory.mktemp("architecture")
    overrides = [f"data.root={root}", *RUN]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RDFER_CACHE", str(cache))
        torch.set_num_threads(1)
        report = architecture.run_experiment(
            "quick", out, seeds=[0], overrides=overrides, progress=False, command="test", cost_rounds=1
        )
    return report, out, overrides, cache


@pytest.mark.slow
def test_reduced_experiment_writes_the_issues_rows(reduced):
    report, out, *_ = reduced
    for name in ("results.json", "results.md", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert [(r["setting"], r["variant"], r["seed"]) for r in saved["runs"]] == [
        (s, v, 0) for s in ("symmetric-0", "symmetric-20") for v in architecture.DEFAULT_VARIANTS
    ]
    for r in saved["runs"]:
        assert set(r) == {"variant", "setting", "seed", "test", "hit_rate", "clips_per_s"}
        assert set(r["test"]) == {"war", "uar", "by_kind"}
        assert set(r["test"]["by_kind"]) == {"easy", "intensity", "short_apex", "distractor"}
        assert r["clips_per_s"] > 0
        places = architecture.VARIANTS[r["variant"]].places_clips
        assert (r["hit_rate"] is not None) == places, r["variant"]
        if places:
            assert set(r["hit_rate"]) == {"apex", "apex_chance", "distractor", "distractor_chance"}
            assert 0 < r["hit_rate"]["apex_chance"] < 0.5
    assert set(saved["step_clips_per_s"]) == set(architecture.DEFAULT_VARIANTS)
    assert all(rate > 0 for rate in saved["step_clips_per_s"].values())
    oracle = [r for r in saved["runs"] if r["variant"] == "apex-clips"]
    assert all(r["hit_rate"]["apex"] == 1.0 for r in oracle)
    assert "Targets of issue 22" in (out / "results.md").read_text()


@pytest.mark.slow
def test_the_report_tests_each_run_as_its_trainer_did(reduced):
    # The experiment's own test pass (per-kind WAR, hit rates) sees the clips the trainer's last test saw:
    # random-clips' test positions are fixed per clip, the oracle's come from the sample ids.
    report, *_ = reduced
    for row, details in zip(report["runs"], report["details"], strict=True):
        assert row["test"]["war"] == pytest.approx(details["trainer_last_epoch"]["war"]), row["variant"]


@pytest.mark.slow
def test_finished_runs_are_reused(reduced, monkeypatch):
    report, out, overrides, cache = reduced
    monkeypatch.setenv("RDFER_CACHE", str(cache))

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("rdfer.training.train", refuse)
    again = architecture.run_experiment(
        "quick", out, ["rdfer"], [0], ["symmetric-0"], overrides, progress=False, cost_rounds=1
    )
    assert again["runs"] == report["runs"][:1]


def test_unknown_variant_seed_or_preset_is_a_clear_error(capsys):
    assert architecture.main(["--variants", "three-streams", "--out", "unused"]) == 2
    assert "three-streams" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        architecture.main(["--seeds", "one", "--out", "unused"])
    assert usage.value.code == 2
    assert "--seeds: takes comma-separated integers, got 'one'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        architecture.main(["--preset", "huge"])


def test_some_of_k_random_clips_hit_a_window_more_often_than_one():
    rows = [
        truth(apex=(9, 10)),
        truth("distractor", apex=(1, 8), distractor=(15, 18)),
        truth("", apex=(3, 12)),
    ]
    levels = any_clip_chance(rows, 4)
    assert levels["apex"] == pytest.approx(1 - 0.9**4) and levels["distractor"] == pytest.approx(1 - 0.8**4)
