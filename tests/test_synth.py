"""SynthDFER: the tiny preset is generated here and its ground truth, layout and determinism are checked."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rdfer.data.records import DataError
from rdfer.data.synth import PAIR_FLIPS, PRESETS, generate, load_ground_truth
from rdfer.data.synth.config import clip_specs
from rdfer.data.synth.expressions import CLASS_AUS, CLASSES, NEUTRAL, Envelope
from rdfer.data.synth.face import render_clip, sample_identity, sample_scene
from rdfer.data.synth.noise import flip_labels, per_class_quota
from rdfer.data.synth.video import check_encoders

TINY = PRESETS["tiny"]
N_TRAIN, N_TEST = sum(TINY.train_per_class), sum(TINY.test_per_class)


# DFEW fold 1: training clips per class (happy, sad, neutral, angry, surprise, disgust, fear).
DFEW_FOLD1_TRAIN_PER_CLASS = [1956, 1515, 2135, 1738, 1175, 116, 721]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_split_csv(root: Path, split: str) -> list[tuple[int, int]]:
    path = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / "set_1.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["video_name", "label"]
    return [(int(a), int(b)) for a, b in rows[1:]]


@pytest.fixture(scope="module")
def symmetric(tmp_path_factory) -> Path:
    """tiny, seed 0, 30% symmetric noise, one process."""
    return generate("tiny", tmp_path_factory.mktemp("sym"), seed=0, noise=0.3, progress=False, workers=1)


def test_same_seed_is_byte_identical_whatever_the_worker_count(symmetric, tmp_path):
    again = generate("tiny", tmp_path / "again", seed=0, noise=0.3, progress=False, workers=2)
    first, second = tree_digest(symmetric), tree_digest(again)
    assert len(first) > N_TRAIN + N_TEST  # frames, CSVs, ground truth, synth.json
    assert first == second


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """tiny, seed 1, 30% class-pair noise, two processes."""
    return generate(
        "tiny",
        tmp_path_factory.mktemp("pairs"),
        seed=1,
        noise=0.3,
        noise_kind="pairs",
        progress=False,
        workers=2,
    )


def test_another_seed_gives_another_dataset(symmetric, pairs):
    # Pixels do not depend on the noise settings, so every frame differs because of the seed alone.
    first, second = tree_digest(symmetric), tree_digest(pairs)
    frames = [k for k in first if k.endswith(".jpg") and k in second]
    assert frames and sum(first[k] != second[k] for k in frames) > 0.9 * len(frames)
    assert first["ground_truth.csv"] != second["ground_truth.csv"]


def test_symmetric_noise_count_is_exact_and_never_the_true_label(symmetric):
    truth = load_ground_truth(symmetric)
    train = [t for t in truth if t.split == "train"]
    noisy = [t for t in train if t.is_noisy]
    assert len(noisy) == round(0.3 * N_TRAIN)
    assert all(t.given_label != t.true_label for t in noisy)
    assert all(t.given_label == t.true_label for t in train if not t.is_noisy)
    assert all(1 <= t.given_label <= 7 for t in train)
    # Stratified: every class loses its share (6 clips per class -> 1 or 2 noisy each).
    per_class = Counter(t.true_label for t in noisy)
    assert sorted(per_class.values()) == sorted(per_class_quota(list(TINY.train_per_class), 0.3))
    assert sum(per_class_quota(list(TINY.train_per_class), 0.3)) == len(noisy)


def test_test_split_is_clean_and_csvs_carry_given_and_true_labels(symmetric):
    truth = {t.video_name: t for t in load_ground_truth(symmetric)}
    test = [t for t in truth.values() if t.split == "test"]
    assert len(test) == N_TEST and not any(t.is_noisy for t in test)
    train_rows, test_rows = read_split_csv(symmetric, "train"), read_split_csv(symmetric, "test")
    assert [truth[v].given_label for v, _ in train_rows] == [label for _, label in train_rows]
    assert [truth[v].true_label for v, _ in test_rows] == [label for _, label in test_rows]
    ids = [v for v, _ in train_rows + test_rows]
    assert sorted(ids) == list(range(1, N_TRAIN + N_TEST + 1))  # from 1, train and test distinct
    assert {label for _, label in train_rows + test_rows} <= set(range(1, 8))
    assert [label for _, label in train_rows] != sorted(
        label for _, label in train_rows
    )  # not sorted by class


def test_pairs_noise_follows_the_mapping(pairs):
    root = pairs
    train = [t for t in load_ground_truth(root) if t.split == "train"]
    noisy = [t for t in train if t.is_noisy]
    assert len(noisy) == round(0.3 * N_TRAIN)
    assert all(t.given_label - 1 == PAIR_FLIPS[t.true_index] for t in noisy)
    manifest = json.loads((root / "synth.json").read_text())
    assert manifest["noise"] == {
        "rate": 0.3,
        "kind": "pairs",
        "pair_flips": {CLASSES[a]: CLASSES[b] for a, b in PAIR_FLIPS.items()},
    }


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.2, 0.37, 1.0])
@pytest.mark.parametrize("kind", ["symmetric", "pairs"])
def test_flip_labels_exact_count_on_awkward_class_sizes(rate, kind):
    true = np.repeat(np.arange(7), [1956, 1515, 2135, 1738, 1175, 116, 721])  # DFEW fold-1 train counts
    given = flip_labels(true, rate, kind, seed=5)
    noisy = given != true
    assert noisy.sum() == round(rate * len(true))
    if kind == "pairs":
        assert all(given[i] == PAIR_FLIPS[true[i]] for i in np.flatnonzero(noisy))


def test_symmetric_noise_is_uniform_over_the_other_classes():
    true = np.repeat(np.arange(7), 6000)
    given = flip_labels(true, 0.5, "symmetric", seed=11)
    for c in range(7):
        wrong = given[(true == c) & (given != true)]
        share = np.bincount(wrong, minlength=7) / len(wrong)
        assert share[c] == 0
        # 3000 draws over 6 classes: the standard error of each share is ~0.007.
        np.testing.assert_allclose(np.delete(share, c), 1 / 6, atol=0.035)


def test_noise_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="noise kind"):
        generate("tiny", tmp_path, noise=0.1, noise_kind="asymmetric", progress=False)
    with pytest.raises(ValueError, match="noise rate"):
        generate("tiny", tmp_path, noise=1.5, progress=False)
    with pytest.raises(ValueError, match="unknown SynthDFER preset"):
        generate("huge", tmp_path, progress=False)


def test_class_balance_and_hard_share_are_as_configured(symmetric):
    truth = load_ground_truth(symmetric)
    for split, per_class in (("train", TINY.train_per_class), ("test", TINY.test_per_class)):
        rows = [t for t in truth if t.split == split]
        counts = Counter(t.true_label for t in rows)
        assert [counts[c + 1] for c in range(7)] == list(per_class)
        hard = Counter(t.true_label for t in rows if t.is_hard)
        assert [hard[c + 1] for c in range(7)] == [round(TINY.hard_share * n) for n in per_class]
    hard_rows = [t for t in truth if t.is_hard]
    assert {t.hard_reason for t in hard_rows} == {"intensity", "short_apex", "distractor"}
    assert all(t.hard_reason == "distractor" for t in hard_rows if t.true_index == NEUTRAL)
    assert all(t.hard_reason == "" for t in truth if not t.is_hard)


def test_hard_reasons_mean_what_they_say(symmetric):
    lo_hard, hi_hard = TINY.hard_intensity
    lo, hi = TINY.normal_intensity
    for t in load_ground_truth(symmetric):
        assert 1 <= t.num_frames and TINY.frames[0] <= t.num_frames <= TINY.frames[1]
        if t.true_index == NEUTRAL:
            assert (t.intensity, t.onset, t.apex_start, t.apex_end, t.offset) == (0, 0, 0, 0, 0)
        else:
            assert 1 <= t.onset <= t.apex_start <= t.apex_end <= t.offset <= t.num_frames
            expected = (lo_hard, hi_hard) if t.hard_reason == "intensity" else (lo, hi)
            assert expected[0] <= t.intensity <= expected[1]
        if t.hard_reason == "short_apex":
            assert t.apex_end - t.apex_start + 1 <= 3
        if t.distractor_class is not None:
            assert t.distractor_class not in (t.true_label, NEUTRAL + 1)
            length = t.distractor_end - t.distractor_start + 1
            if t.hard_reason == "distractor":
                assert t.distractor_intensity >= TINY.strong_distractor_intensity[0]
                if t.true_index != NEUTRAL:
                    assert length < t.apex_end - t.apex_start + 1  # shorter than the target's apex
                    assert t.distractor_end < t.onset or t.distractor_start > t.offset
            else:
                assert t.distractor_intensity <= TINY.weak_distractor_intensity[1] and length <= 4
        elif t.hard_reason == "distractor":
            pytest.fail(f"hard distractor clip {t.key} has no distractor")


def test_frames_match_ground_truth_and_follow_dfew_naming(symmetric):
    truth = load_ground_truth(symmetric)
    clips = symmetric / "Clip" / "clip_224x224"
    assert sorted(p.name for p in clips.iterdir()) == [t.key for t in truth]
    for t in truth:
        names = sorted(p.name for p in (clips / t.key).iterdir())
        assert names == [f"{t.key}_{n:05d}.jpg" for n in range(1, t.num_frames + 1)]
    with Image.open(clips / truth[0].key / f"{truth[0].key}_00001.jpg") as image:
        assert image.format == "JPEG" and image.size == (48, 48) and image.mode == "RGB"


def test_the_dfew_reader_reads_it(symmetric):
    from rdfer.data.dfew import read_dfew

    truth = {t.key: t for t in load_ground_truth(symmetric)}
    for split in ("train", "test"):
        records = read_dfew(symmetric, split, fold=1).records
        assert len(records) == (N_TRAIN if split == "train" else N_TEST)
        for r in records:
            t = truth[r.key]
            assert r.label == (t.given_label - 1 if split == "train" else t.true_index)
            assert r.path.is_dir()


def test_manifest_states_every_setting(symmetric):
    manifest = json.loads((symmetric / "synth.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 0 and manifest["image_size"] == 48
    assert manifest["config"]["hard_share"] == TINY.hard_share and manifest["config"]["frames"] == [12, 24]
    assert manifest["counts"]["train_noisy"] == round(0.3 * N_TRAIN)
    assert manifest["classes"] == list(CLASSES)


def test_a_complete_folder_is_not_regenerated(symmetric, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in symmetric.rglob("*")}
    module = importlib.import_module("rdfer.data.synth.generate")  # the package's `generate` is the function

    def never(*args, **kwargs):
        raise AssertionError("a complete folder was cleared or rendered again")

    for step in ("_clear", "_write_split_files", "_write_ground_truth", "_render_all"):
        monkeypatch.setattr(module, step, never)
    assert generate("tiny", symmetric, seed=0, noise=0.3, progress=False) == symmetric
    assert {p: p.stat().st_mtime_ns for p in symmetric.rglob("*")} == before


def test_a_partial_or_different_folder_is_regenerated_and_a_foreign_one_refused(tmp_path):
    root = generate("tiny", tmp_path / "d", seed=0, train_per_class=1, test_per_class=1, progress=False)
    reference = tree_digest(root)
    (root / "synth.json").unlink()  # an interrupted run: no completion marker
    (root / "Clip" / "clip_224x224" / "99999").mkdir()
    generate("tiny", root, seed=0, train_per_class=1, test_per_class=1, progress=False)
    assert tree_digest(root) == reference
    generate("tiny", root, seed=0, train_per_class=2, test_per_class=1, progress=False)  # other settings
    assert len(load_ground_truth(root)) == 7 * 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(DataError, match="not a SynthDFER folder"):
        generate("tiny", foreign, progress=False)
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_cli_writes_and_says_where(tmp_path, capsys):
    from rdfer.data.__main__ import main

    out = tmp_path / "cli"
    argv = [
        "synth",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--noise",
        "0.3",
        "--noise-kind",
        "pairs",
        "--train-per-class",
        "2",
        "--test-per-class",
        "1",
        "--no-progress",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed and "written to" in printed
    truth = load_ground_truth(out)
    assert len(truth) == 21 and sum(t.is_noisy for t in truth) == round(0.3 * 14)
    assert main(argv) == 0
    assert "already complete" in capsys.readouterr().out


def _has_encoder(videos: str) -> bool:
    try:
        check_encoders(videos, 48)
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("ext", ["webm", "mp4"])
def test_videos_are_deterministic_and_decode_to_every_frame(tmp_path, ext):
    if not _has_encoder(ext):
        pytest.skip(f"this PyAV has no encoder for .{ext}")
    kwargs = {
        "seed": 0,
        "videos": ext,
        "train_per_class": 1,
        "test_per_class": 0,
        "progress": False,
        "workers": 1,
    }
    a = generate("tiny", tmp_path / "a", **kwargs)
    b = generate("tiny", tmp_path / "b", **kwargs)
    assert tree_digest(a) == tree_digest(b)
    for t in load_ground_truth(a):
        path = a / "Clip" / "original" / f"{t.key}.{ext}"
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == t.num_frames and frames[0].shape == (48, 48, 3)
        jpeg = np.asarray(
            Image.open(a / "Clip" / "clip_224x224" / t.key / f"{t.key}_00001.jpg"), dtype=np.float32
        )
        assert np.abs(frames[0].astype(np.float32) - jpeg).mean() < 12  # same picture, two lossy codecs


def test_missing_encoder_or_odd_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="even image size"):
        generate("tiny", tmp_path, videos="webm", image_size=49, progress=False)
    with pytest.raises(ValueError, match="videos must be one of"):
        generate("tiny", tmp_path, videos="avi", progress=False)


def test_envelope_time_course():
    env = Envelope(onset=3, apex_start=6, apex_end=9, offset=12, intensity=0.8)
    curve = env.curve(14)
    assert np.all(curve[:2] == 0) and np.all(curve[12:] == 0)  # frames 1-2 and 13-14
    np.testing.assert_allclose(curve[5:9], 0.8)  # frames 6-9
    assert np.all(np.diff(curve[2:6]) > 0) and np.all(np.diff(curve[8:12]) < 0)
    assert np.all((curve[2:5] > 0) & (curve[2:5] < 0.8))


def test_every_class_changes_the_face(tmp_path):
    """One frame per class for 3 identities (no sensor noise, no blink); also a contact sheet to look at."""
    size, rows = 64, []
    for person in range(3):
        who = sample_identity(np.random.default_rng([9, person]))
        row = []
        for c in range(len(CLASSES)):
            rng = np.random.default_rng([9, 100 + person])  # same scene for every class
            scene = dataclasses.replace(sample_scene(rng, size, 2, 1, (0.0, 0.0)), blinks=frozenset())
            aus = np.clip(who.resting + CLASS_AUS[c], 0, 1)[None]
            row.append(render_clip(who, scene, aus, size, 2, 25, rng)[0].astype(np.float32))
        for a in range(len(CLASSES)):
            for b in range(a + 1, len(CLASSES)):
                diff = np.abs(row[a] - row[b]).max(axis=2)
                # Distinct expressions move features: over 20 of the 4,096 pixels change clearly (the closest
                # pair over 100 people changes 40).
                assert (diff > 30).mean() > 0.005, (
                    f"{CLASSES[a]} and {CLASSES[b]} look alike for person {person}"
                )
        rows.append(np.concatenate(row, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0).astype(np.uint8)).save(tmp_path / "contact_sheet.png")


def test_dfew_shaped_preset_takes_counts_and_classes_from_the_real_files(datasets):
    counts_file = datasets / "dfew" / "frame_counts.csv"
    config = PRESETS["dfew-shaped"].replace(dfew_frame_counts=str(counts_file))
    specs = clip_specs(config)
    train = [s for s in specs if s.split == "train"]
    test = [s for s in specs if s.split == "test"]
    assert (len(train), len(test)) == (9356, 2341)
    assert [sum(s.true_class == c for s in train) for c in range(7)] == DFEW_FOLD1_TRAIN_PER_CLASS
    frames = [s.num_frames for s in specs]
    assert min(frames) == 16 and max(frames) == 847 and int(np.median(frames)) == 70
    with open(counts_file) as f:
        by_id = {int(r["video_name"]): int(r["num_frames"]) for r in csv.DictReader(f)}
    first_id = read_split_csv(datasets / "dfew", "train")[0][0]
    assert train[0].num_frames == by_id[first_id]
    assert config.image_size == 112


def test_dfew_shaped_without_the_files_is_a_clear_error(tmp_path):
    config = PRESETS["dfew-shaped"].replace(dfew_frame_counts=str(tmp_path / "nowhere" / "frame_counts.csv"))
    with pytest.raises(DataError, match="frame-count file not found"):
        clip_specs(config)


def test_dfew_shaped_without_the_files_has_dfews_sizes():
    specs = clip_specs(PRESETS["dfew-shaped"])  # no file outside the package is needed
    train = [s for s in specs if s.split == "train"]
    assert len(train) == 9356 and len(specs) - len(train) == 2341
    assert [sum(s.true_class == c for s in train) for c in range(7)] == DFEW_FOLD1_TRAIN_PER_CLASS
    assert PRESETS["dfew-shaped"].frames == (42, 124) and PRESETS["dfew-shaped"].image_size == 112
