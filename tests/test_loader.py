"""Frame IO and the CPU clip loader on tiny datasets made in tmp_path, and the committed bad-input files."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from rdfer.data import frames as frames_module
from rdfer.data.augment import clip_augment_params
from rdfer.data.frames import count_frames, list_frames, read_clip, verify_record
from rdfer.data.loader import (
    ClipDataset,
    SkipReport,
    load_clip_frames,
    make_loader,
    set_loader_epoch,
)
from rdfer.data.records import ClipRecord, DataError, Split
from rdfer.data.sampling import epoch_order, uniform_indices
from rdfer.ops.augment import PARAM_COLUMNS, params_to_tensor

RESOURCES = Path(__file__).resolve().parent / "resources"
T = 8  # frames per clip in these tests (the package default is 64); small keeps them fast
SIZE = 16


def colour(clip: int, frame: int) -> tuple[int, int, int]:
    """A solid colour per (clip, frame), far enough apart to survive JPEG/VP9 compression."""
    return (10 + 20 * (frame % 12), 20 + 50 * (clip % 5), 200 - 12 * (frame // 12))


def write_frame_folder(folder: Path, clip: int, n: int, ext: str = ".jpg", src_size: int = 24) -> Path:
    # Unpadded names 1.jpg .. n.jpg: only a natural sort puts 10.jpg after 9.jpg.
    folder.mkdir(parents=True)
    for k in range(n):
        Image.new("RGB", (src_size, src_size), colour(clip, k)).save(folder / f"{k + 1}{ext}", quality=95)
    return folder


def _encoder() -> tuple[str, str]:
    """(codec, suffix): VP9 in WebM when this PyAV can encode it, else MJPEG in AVI."""
    try:
        av.codec.Codec("libvpx-vp9", "w")
        return "libvpx-vp9", ".webm"
    except Exception:
        return "mjpeg", ".avi"


def write_video(path: Path, clip: int, n: int, codec: str, size: int = 32) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "libvpx-vp9":
            stream.options = {"crf": "10", "lossless": "0"}
        stream.time_base = Fraction(1, 25)
        for k in range(n):
            img = np.full((size, size, 3), colour(clip, k), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_split(records: list[tuple[Path, int]], name: str = "test") -> Split:
    return Split(
        "synthetic",
        name,
        ("a", "b", "c"),
        [ClipRecord(sample_id=i, key=p.name, path=p, label=label) for i, (p, label) in enumerate(records)],
    )


def assert_frames_match_sources(frames: torch.Tensor, clip: int, n: int, tol: int = 4) -> None:
    """frames uint8 [T, 3, H, W] must be source frames uniform_indices(n, T) of clip `clip`."""
    for t, k in enumerate(uniform_indices(n, frames.shape[0])):
        got = frames[t].float().mean(dim=(1, 2))
        want = torch.tensor(colour(clip, int(k)), dtype=torch.float32)
        assert (got - want).abs().max() <= tol, f"frame {t}: got {got.tolist()}, want source frame {k} {want}"


@pytest.fixture
def folder_split(tmp_path: Path) -> Split:
    lengths = [3, 8, 13, 5, 20, 1, 9]  # shorter and longer than T, one single-frame clip
    return make_split(
        [
            (write_frame_folder(tmp_path / f"clip{c}", c, n, ext=".png" if c == 3 else ".jpg"), c % 3)
            for c, n in enumerate(lengths)
        ]
    )


# ---- frame IO -------------------------------------------------------------------------------------------


def test_list_frames_natural_order_and_filtering(tmp_path):
    folder = write_frame_folder(tmp_path / "clip", 0, 12)
    (folder / "notes.txt").write_text("not a frame")
    (folder / "._1.jpg").write_bytes(b"macOS fork")
    Image.new("RGB", (4, 4)).save(folder / "13.JPEG")
    names = [p.name for p in list_frames(folder)]
    assert names == [f"{k}.jpg" for k in range(1, 13)] + ["13.JPEG"]


def test_read_clip_frame_folder_gives_expected_frames(tmp_path):
    folder = write_frame_folder(tmp_path / "clip", 2, 13)
    clip = read_clip(folder, uniform_indices(13, T), SIZE)
    assert clip.dtype == np.uint8 and clip.shape == (T, SIZE, SIZE, 3)
    assert_frames_match_sources(torch.from_numpy(clip).permute(0, 3, 1, 2), 2, 13)


def test_read_clip_decodes_each_distinct_index_once(tmp_path, monkeypatch):
    folder = write_frame_folder(tmp_path / "clip", 1, 3)
    calls = []
    real = frames_module._decode_image
    monkeypatch.setattr(frames_module, "_decode_image", lambda p, s: calls.append(p.name) or real(p, s))
    clip = read_clip(folder, uniform_indices(3, 64), SIZE)
    assert sorted(calls) == ["1.jpg", "2.jpg", "3.jpg"]
    assert_frames_match_sources(torch.from_numpy(clip).permute(0, 3, 1, 2), 1, 3)


@pytest.mark.parametrize("codec,suffix", [_encoder(), ("mjpeg", ".avi")])
def test_video_clip_gives_expected_frames(tmp_path, codec, suffix):
    # WebM carries no frame count (count_frames decodes); AVI does (count_frames reads the header).
    path = write_video(tmp_path / f"clip{suffix}", 4, 11, codec)
    assert count_frames(path) == 11
    clip = read_clip(path, uniform_indices(11, T), SIZE)
    assert clip.shape == (T, SIZE, SIZE, 3)
    assert_frames_match_sources(torch.from_numpy(clip).permute(0, 3, 1, 2), 4, 11, tol=6)
    short = read_clip(path, uniform_indices(11, 40), SIZE)  # repeats frames, decoded once each
    assert_frames_match_sources(torch.from_numpy(short).permute(0, 3, 1, 2), 4, 11, tol=6)
    assert verify_record(ClipRecord(0, "v", path, 0)) == []


def test_video_index_past_the_end_names_the_file(tmp_path):
    codec, suffix = _encoder()
    path = write_video(tmp_path / f"clip{suffix}", 0, 4, codec)
    with pytest.raises(DataError, match=rf"{path.name}.*ended after 4 frames"):
        read_clip(path, np.array([0, 9]), SIZE)


# ---- bad input ------------------------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (clip path, file the error must name, words the error must contain)."""
    cases = {}
    for name in ("corrupt.jpg", "truncated.jpg"):
        folder = write_frame_folder(tmp_path / f"with_{name}", 0, 3)
        shutil.copy(RESOURCES / name, folder / "2.jpg")  # a bad frame in the middle of a good clip
        cases[name] = (folder, str(folder / "2.jpg"), "cannot decode image")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    cases["empty"] = (empty, str(empty), "no frame images")
    cases["missing"] = (tmp_path / "missing", str(tmp_path / "missing"), "missing")
    bad_video = RESOURCES / "bad_video.webm"
    cases["bad_video"] = (bad_video, str(bad_video), "cannot open video")
    audio = tmp_path / "audio_only.wav"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in s.encode(frame):
            c.mux(packet)
    cases["audio_only"] = (audio, str(audio), "no video stream")
    return cases


def test_committed_resources_are_small():
    files = [RESOURCES / n for n in ("corrupt.jpg", "truncated.jpg", "bad_video.webm")]
    assert sum(f.stat().st_size for f in files) < 20_000


BAD_CASES = ["corrupt.jpg", "truncated.jpg", "empty", "missing", "bad_video", "audio_only"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_data_error_naming_the_file(tmp_path, case):
    path, named, words = _bad_inputs(tmp_path)[case]
    with pytest.raises(DataError) as info:
        load_clip_frames(path, T, SIZE)
    assert named in str(info.value) and words in str(info.value)
    problems = verify_record(ClipRecord(0, case, path, 0))
    assert len(problems) == 1 and named in problems[0]


def test_verify_record_reports_every_bad_frame(tmp_path):
    folder = write_frame_folder(tmp_path / "clip", 0, 5)
    shutil.copy(RESOURCES / "corrupt.jpg", folder / "2.jpg")
    shutil.copy(RESOURCES / "truncated.jpg", folder / "4.jpg")
    problems = verify_record(ClipRecord(0, "clip", folder, 0))
    assert [p.split(":")[0] for p in problems] == [str(folder / "2.jpg"), str(folder / "4.jpg")]
    assert verify_record(ClipRecord(1, "good", write_frame_folder(tmp_path / "good", 0, 3), 0)) == []


def test_loader_raises_on_bad_clip_without_skip(tmp_path, folder_split):
    path, named, _ = _bad_inputs(tmp_path)["truncated.jpg"]
    split = make_split([(r.path, r.label) for r in folder_split.records] + [(path, 0)])
    with pytest.raises(DataError, match=named):
        list(make_loader(split, batch_size=4, train=False, num_frames=T, image_size=SIZE, workers=0))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_drops_and_lists_every_bad_clip(tmp_path, folder_split, workers):
    bad = _bad_inputs(tmp_path)
    good = [(r.path, r.label) for r in folder_split.records]
    records = good[:2] + [(p, 0) for p, _, _ in bad.values()] + good[2:]
    split = make_split(records)
    loader = make_loader(
        split, batch_size=3, train=False, num_frames=T, image_size=SIZE, workers=workers, skip_bad=True
    )
    report = SkipReport()
    seen = []
    for batch in loader:
        report.add(batch)
        assert batch["frames"].shape[1:] == (T, 3, SIZE, SIZE)
        assert len(batch["frames"]) == len(batch["label"]) == len(batch["sample_id"])
        seen += batch["sample_id"].tolist()
    bad_ids = set(range(2, 2 + len(bad)))
    assert seen == [i for i in range(len(records)) if i not in bad_ids]  # every good clip, in order
    assert len(report) == len(bad)
    for (_, named, words), entry in zip(bad.values(), report.entries, strict=True):
        assert named in entry and words in entry
    assert report.summary().startswith(f"skipped {len(bad)} clips:")


def test_a_training_batch_of_bad_clips_is_empty_with_its_params_to_tensor(tmp_path):
    bad = _bad_inputs(tmp_path)
    split = make_split([(bad[c][0], 0) for c in ("corrupt.jpg", "missing")])
    (batch,) = make_loader(
        split, batch_size=2, train=True, num_frames=T, image_size=SIZE, workers=0, skip_bad=True
    )
    assert batch["frames"].shape == (0, T, 3, SIZE, SIZE) and batch["augment"].shape == (0, 8)
    assert len(batch["skipped"]) == 2


# ---- the loader -----------------------------------------------------------------------------------------


def test_eval_pass_covers_every_clip_once_in_order(folder_split):
    loader = make_loader(folder_split, batch_size=3, train=False, num_frames=T, image_size=SIZE, workers=0)
    ids, labels = [], []
    for batch in loader:
        assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape[1:] == (T, 3, SIZE, SIZE)
        assert batch["label"].dtype == torch.int64 and batch["sample_id"].dtype == torch.int64
        assert batch["skipped"] == [] and "augment" not in batch
        for frames, sid in zip(batch["frames"], batch["sample_id"].tolist(), strict=True):
            n = len(list_frames(folder_split.records[sid].path))
            assert_frames_match_sources(frames, sid, n)  # eval: resize only, no augmentation
        ids += batch["sample_id"].tolist()
        labels += batch["label"].tolist()
    assert ids == list(range(len(folder_split)))  # 7 clips in batches of 3: nothing dropped
    assert labels == [r.label for r in folder_split.records]


def test_eval_is_deterministic_across_epochs(folder_split):
    ds = ClipDataset(folder_split, T, SIZE, train=False)
    a = ds[4]["frames"]
    ds.set_epoch(3)
    assert torch.equal(a, ds[4]["frames"])


def test_train_sample_is_the_eval_sample_plus_its_augmentation(folder_split):
    train = ClipDataset(folder_split, T, SIZE, train=True, seed=11, augment={"jitter": 0.3})
    train.set_epoch(2)
    plain = ClipDataset(folder_split, T, SIZE, train=False)[4]
    sample = train[4]
    assert "augment" not in plain
    assert torch.equal(sample["frames"], plain["frames"])  # the loader never touches the pixels
    params = clip_augment_params(11, 2, 4, SIZE, jitter=0.3)
    assert sample["augment"].dtype == torch.float32 and sample["augment"].shape == (len(PARAM_COLUMNS),)
    assert torch.equal(sample["augment"], params_to_tensor([params])[0])


def _collect(loader) -> list[dict]:
    return [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()} for b in loader]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in ("frames", "label", "sample_id", "augment"):
            if k in x:
                assert torch.equal(x[k], y[k]), k
        assert x["skipped"] == y["skipped"]


def test_train_order_and_augmentation_are_pure_functions_of_seed_and_epoch(folder_split):
    def run(seed, epoch):
        return _collect(
            make_loader(
                folder_split,
                batch_size=3,
                train=True,
                num_frames=T,
                image_size=SIZE,
                workers=0,
                seed=seed,
                epoch=epoch,
            )
        )

    first = run(42, 0)
    assert len(first) == 2  # 7 clips, batch 3: the partial batch is dropped in training
    order = epoch_order(len(folder_split), 42, 0)
    assert torch.cat([b["sample_id"] for b in first]).tolist() == order[:6].tolist()
    for b in first:
        want = [clip_augment_params(42, 0, s, SIZE) for s in b["sample_id"].tolist()]
        assert torch.equal(b["augment"], params_to_tensor(want))
    _assert_same_batches(first, run(42, 0))

    second = run(42, 1)
    by_id = {int(s): a for b in first for s, a in zip(b["sample_id"], b["augment"], strict=True)}
    by_id_e1 = {int(s): a for b in second for s, a in zip(b["sample_id"], b["augment"], strict=True)}
    common = set(by_id) & set(by_id_e1)
    assert common and all(not torch.equal(by_id[i], by_id_e1[i]) for i in common)  # new epoch, new aug


def test_set_loader_epoch_matches_a_fresh_loader(folder_split):
    loader = make_loader(folder_split, batch_size=2, train=True, num_frames=T, image_size=SIZE, workers=0)
    set_loader_epoch(loader, 5)
    fresh = make_loader(
        folder_split, batch_size=2, train=True, num_frames=T, image_size=SIZE, workers=0, epoch=5
    )
    _assert_same_batches(_collect(loader), _collect(fresh))


def test_workers_do_not_change_batches(folder_split):
    kwargs = dict(batch_size=3, train=True, num_frames=T, image_size=SIZE, seed=3, epoch=1)
    _assert_same_batches(
        _collect(make_loader(folder_split, workers=0, **kwargs)),
        _collect(make_loader(folder_split, workers=2, **kwargs)),
    )


def test_train_loader_rejects_split_smaller_than_batch(folder_split):
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(folder_split, batch_size=64, train=True, workers=0)


def test_custom_sampler_overrides_order(folder_split):
    loader = make_loader(
        folder_split, batch_size=2, train=False, num_frames=T, image_size=SIZE, workers=0, sampler=[6, 0, 3]
    )
    assert torch.cat([b["sample_id"] for b in loader]).tolist() == [6, 0, 3]


def test_distributed_sampler_shards_the_split(folder_split):
    from torch.utils.data.distributed import DistributedSampler

    ids = []
    for rank in (0, 1):
        # DistributedSampler only needs len(): the Split itself will do.
        sampler = DistributedSampler(folder_split, num_replicas=2, rank=rank, shuffle=True, seed=42)
        loader = make_loader(
            folder_split,
            batch_size=2,
            train=True,
            num_frames=T,
            image_size=SIZE,
            workers=0,
            sampler=sampler,
            epoch=3,
        )
        assert sampler.epoch == 3
        ids += torch.cat([b["sample_id"] for b in loader]).tolist()
    # 7 clips padded to 8 (one repeated), 4 per rank, 2 full batches each: both ranks together see every clip.
    assert len(ids) == 8 and sorted(set(ids)) == list(range(7))
