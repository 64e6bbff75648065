"""The training loop end to end on SynthDFER `tiny`, generated once for this module."""

import json
import math

import pytest
import torch

import rdfer.evaluation
from rdfer import checkpoint, distributed, load_model, resume
from rdfer import training as train_module
from rdfer.config import ConfigError, load_config
from rdfer.data.prepare import load_splits
from rdfer.evaluate import main as evaluate_main
from rdfer.metrics import confusion_matrix
from rdfer.optimization import lr_lambda
from rdfer.train import main as train_main
from rdfer.train import parse_folds, train, train_folds
from rdfer.training import TrainingError


class Killed(BaseException):
    """A kill mid-run: nothing of the run catches it, so it ends writing nothing more."""


@pytest.fixture
def kill_at_step(monkeypatch):
    """kill_at_step(n): the run dies as it starts optimiser step n (0-based), as if killed."""

    def arm(n: int) -> None:
        real = train_module.train_step

        def step(run, batch, totals):
            if run.step >= n:
                raise Killed(run.step)
            real(run, batch, totals)

        monkeypatch.setattr(train_module, "train_step", step)

    return arm


def without_timing(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_train_writes_everything_a_user_needs(tiny_config, tmp_path):
    summary = train(tiny_config(tmp_path), progress=False)
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    # robust.warmup=0.34 of 3 epochs: the warm-up ends after epoch 1 (`warm`: ended by the row's end).
    assert [h["warm"] for h in summary["history"]] == [True, True, True]
    for row in summary["history"]:
        assert 0 <= row["test_war"] <= 1 and 0 <= row["test_uar"] <= 1
        assert row["share_easy"] + row["share_hard"] + row["share_noisy"] == pytest.approx(1)
    for name in ("last.pt", "best.pt", "summary.json", "noisy_samples.csv"):
        assert (tmp_path / name).is_file(), name
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    header = (tmp_path / "noisy_samples.csv").read_text().splitlines()[0]
    assert header == "sample_id,key,given_label,network_class,noise_score"
    assert summary["best_war_epoch"]["war"] == max(h["test_war"] for h in summary["history"])


def test_killed_mid_epoch_and_resumed_ends_exactly_like_an_uninterrupted_run(
    tiny_config, tmp_path, monkeypatch, kill_at_step
):
    whole = train(tiny_config(tmp_path / "whole"), progress=False)
    cfg = tiny_config(tmp_path / "cut")
    steps_per_epoch = 42 // 8  # tiny: 42 training clips, the last partial batch dropped
    kill_at_step(steps_per_epoch + 2)
    with pytest.raises(Killed) as killed:
        train(cfg, progress=False)
    assert killed.value.args == (steps_per_epoch + 2,)
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / "cut" / "last.pt")["epoch"] == 0  # only epoch 1 completed
    resumed = train(cfg, resume=tmp_path / "cut" / "last.pt", progress=False)
    assert without_timing(resumed["history"]) == without_timing(whole["history"])
    a = checkpoint.load(tmp_path / "whole" / "last.pt")
    b = checkpoint.load(tmp_path / "cut" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["selector"]["elr_targets"], b["selector"]["elr_targets"])
    assert torch.equal(a["selector"]["stats"]["sums"], b["selector"]["stats"]["sums"])
    assert (tmp_path / "whole" / "noisy_samples.csv").read_text() == (
        tmp_path / "cut" / "noisy_samples.csv"
    ).read_text()


def test_a_half_written_checkpoint_is_never_read(tiny_config, tmp_path, monkeypatch, kill_at_step):
    cfg = tiny_config(tmp_path, "optim.epochs=2")
    kill_at_step(6)
    with pytest.raises(Killed):
        train(cfg, progress=False)  # epoch 1 complete (5 steps) -> last.pt holds epoch 0
    monkeypatch.undo()
    before = (tmp_path / "last.pt").read_bytes()

    def dies_while_writing(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, resume=tmp_path / "last.pt", progress=False)
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() == before  # the rename never happened
    assert not list(tmp_path.glob(".*.tmp"))  # and the temporary file is gone
    (tmp_path / "broken.pt").write_bytes(before[: len(before) // 2])
    with pytest.raises(ValueError, match="broken.pt: not a readable checkpoint"):
        checkpoint.load(tmp_path / "broken.pt")
    assert train(cfg, resume=tmp_path / "last.pt", progress=False)["last_epoch"]["epoch"] == 2


def test_an_extended_run_is_built_for_its_checkpoint(tiny_config, tmp_path):
    # The selector keeps the epochs it was planned for (its warm-up is a share of them); the schedule falls
    # from the rate the run had reached, not from a fresh warm-up.
    warmup = "optim.warmup_epochs=0.4"  # so that one epoch ends its cosine, where a fresh plan would not be
    done = train(tiny_config(tmp_path, "optim.epochs=1", warmup), progress=False)
    longer = tiny_config(tmp_path, "optim.epochs=10", warmup)
    start = resume.read(tmp_path / "last.pt", longer)
    split = load_splits(longer.data, progress=False)[0]
    run = train_module.learner(longer, distributed.World(), torch.device("cpu"), split, start=start)
    assert run.selector.epochs == 1
    steps = done["history"][0]["train_clips"] // longer.data.batch_size
    reached = lr_lambda(start.config.optim, steps)(steps)
    assert run.scheduler.lr_lambdas[0](steps) == pytest.approx(reached)
    assert lr_lambda(longer.optim, steps)(steps) != pytest.approx(reached)  # a fresh plan would differ


def test_resume_with_another_config_is_refused(tiny_config, tmp_path):
    train(tiny_config(tmp_path, "optim.epochs=1"), progress=False)
    other = tiny_config(tmp_path, "optim.epochs=1", "optim.lr=0.01", "model.lstm_hidden=16")
    with pytest.raises(ConfigError) as info:
        train(other, resume=tmp_path / "last.pt", progress=False)
    assert "made with another config" in str(info.value)
    assert "optim.lr: 0.002 != 0.01" in str(info.value) and "model.lstm_hidden: 8 != 16" in str(info.value)


def test_nonfinite_losses_are_skipped_counted_and_stop_the_run(tiny_config, tmp_path, monkeypatch):
    real = train_module.rdfer_loss
    calls = {"n": 0}

    def nan_at_second_step(*args, **kwargs):
        calls["n"] += 1
        total, parts = real(*args, **kwargs)
        return (total * math.nan if calls["n"] == 2 else total), parts

    monkeypatch.setattr(train_module, "rdfer_loss", nan_at_second_step)
    summary = train(tiny_config(tmp_path / "one", "optim.epochs=1"), progress=False)
    assert summary["history"][0]["nonfinite_steps"] == 1
    assert math.isfinite(summary["history"][0]["loss"])

    monkeypatch.setattr(train_module, "rdfer_loss", lambda *a, **k: (real(*a, **k)[0] * math.inf, {}))
    with pytest.raises(TrainingError, match="3 steps in a row had a non-finite loss"):
        train(tiny_config(tmp_path / "all", "optim.max_bad_steps=3"), progress=False)


def recorded_predictions(monkeypatch) -> list[dict]:
    """Each evaluation's video logits by clip (training's and the evaluate CLI's), in the order they run."""
    calls = []
    real = rdfer.evaluation.predict_loader

    def recording(*args, **kwargs):
        logits, labels, ids, skipped = real(*args, **kwargs)
        by_clip = {"logits": torch.empty_like(logits), "labels": torch.empty_like(labels)}
        by_clip["logits"][ids], by_clip["labels"][ids] = logits, labels
        calls.append(by_clip)
        return logits, labels, ids, skipped

    monkeypatch.setattr(rdfer.evaluation, "predict_loader", recording)
    return calls


@pytest.mark.slow
def test_evaluate_cli_matches_training_and_covers_every_clip(colour_config, tmp_path, capsys, monkeypatch):
    # The colour dataset's model predicts several classes, some clips right and some wrong, on 15 test clips
    # (not a multiple of the batch of 8): the evaluate CLI must compute the same video logits as training's
    # last evaluation, hence the same confusion matrix, WAR and UAR.
    evaluations = recorded_predictions(monkeypatch)
    summary = train(colour_config(tmp_path), progress=False)
    capsys.readouterr()
    png = tmp_path / "cm.png"
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(tmp_path / "last.pt"),
                "--png",
                str(png),
                "--no-progress",
                "--output",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((tmp_path / "eval.json").read_text())
    assert len(evaluations) == 5 + 1  # one per epoch, then the CLI's
    trained, evaluated = evaluations[-2], evaluations[-1]
    torch.testing.assert_close(evaluated["logits"], trained["logits"], rtol=1e-5, atol=1e-5)
    predicted, labels = evaluated["logits"].argmax(-1), evaluated["labels"]
    assert len(set(predicted.tolist())) >= 3, f"a degenerate model predicts {predicted.tolist()}"
    assert 0 < (predicted == labels).sum() < len(labels)
    assert result["num_clips"] == 15 and sum(map(sum, result["confusion"])) == 15
    assert result["confusion"] == confusion_matrix(predicted, labels, 7).tolist()
    assert result["war"] == summary["last_epoch"]["war"] and result["uar"] == summary["last_epoch"]["uar"]
    assert set(result["per_class_recall"]) == set(result["classes"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_model(tmp_path / "best.pt")
    assert not model.training and model.classes == tuple(result["classes"])


def test_train_cli_reports_bad_config_keys(tmp_path, capsys):
    assert train_main(["--out", str(tmp_path), "optim.lrr=1"]) == 2
    assert "unknown key optim.lrr" in capsys.readouterr().err


def test_folds_end_with_the_per_fold_and_mean_table(tiny_config, tmp_path):
    result = train_folds(tiny_config(tmp_path, "optim.epochs=1"), [1], progress=False)
    assert [r["fold"] for r in result["folds"]] == [1]
    assert (tmp_path / "fold1" / "last.pt").is_file()
    table = (tmp_path / "folds.md").read_text().splitlines()
    assert table[0].startswith("| fold |") and table[-1].startswith("| mean |")
    assert result["mean"]["best_war"] == result["folds"][0]["best_war"]


def test_parse_folds():
    assert parse_folds("1-5") == [1, 2, 3, 4, 5]
    assert parse_folds("2,4") == [2, 4]
    assert parse_folds("3") == [3]


def test_asking_for_the_dali_loader_without_dali_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("rdfer.data.dali.dali_available", lambda: False)
    with pytest.raises(ValueError, match="needs NVIDIA DALI"):
        train(load_config("quick", ["data.loader=dali", f"run.out={tmp_path}"]), progress=False)
