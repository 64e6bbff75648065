"""The DALI clip loader against its twin, the CPU loader (rdfer.data.loader), with DALI on the CPU; and
DALI as the frame cache's filler.

Decoding is the same library on the CPU (libjpeg-turbo, bit-identical here); what differs is the resize of the
decoded frame to image_size: PIL's bilinear filter (fixed-point coefficients) against DALI's antialiased
linear one. Measured on textured frames: at most 4-5 levels on a few pixels, mean ~0.15. Tolerance: max 6,
mean 0.5.
VP9 videos add the YUV 4:2:0 -> RGB conversion (swscale in PyAV against DALI's libavcodec path): on frames of
random chroma texture it differs by up to 48 levels at full resolution (chroma upsampling); after the 32 -> 16
resize, max 11, mean 2.2. Tolerance there: max 16, mean 3. A wrong frame differs far more.
The augmentation is not applied by any loader: its parameters ('augment') must be equal, exactly.
Every parity test also asserts that DALI made each batch (the loader's counters), not its CPU fallback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEVICES, tolerance
from PIL import Image

pytest.importorskip(
    "nvidia.dali",
    reason="nvidia-dali is not installed (pip install 'rdfer[dali-cu12]' or 'rdfer[dali-cu13]')",
)

from rdfer.config import load_config  # noqa: E402
from rdfer.data.cached_loader import CachedClipLoader, make_cached_loader  # noqa: E402
from rdfer.data.dali import DaliClipLoader, split_source  # noqa: E402
from rdfer.data.loader import SkipReport, make_loader, set_loader_epoch  # noqa: E402
from rdfer.data.prepare import build_loader  # noqa: E402
from rdfer.distributed import ShardedEpochSampler, World, eval_shard  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_loader import (  # noqa: E402
    RESOURCES,
    _bad_inputs,
    assert_frames_match_sources,
    make_split,
    write_frame_folder,
    write_video,
)

T, SIZE = 8, 16
FRAME_TOL, FRAME_MEAN_TOL = tolerance("cpu", "dali_levels")
VIDEO_TOL, VIDEO_MEAN_TOL = 16, 3.0


def textured_folder(folder: Path, seed: int, n: int, src: int = 40, ext: str = ".jpg") -> Path:
    """Smooth random texture (not solid colours) so resize and crop differences show."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in range(n):
        small = rng.integers(0, 256, (src // 4, src // 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((src, src), Image.Resampling.BILINEAR).save(
            folder / f"{k + 1}{ext}", quality=90
        )
    return folder


@pytest.fixture
def textured_split(tmp_path):
    lengths = [3, 8, 13, 5, 20, 1, 9]
    return make_split(
        [
            (textured_folder(tmp_path / f"clip{c}", c, n, ext=".png" if c == 3 else ".jpg"), c % 3)
            for c, n in enumerate(lengths)
        ]
    )


def dali(split, **kw):
    kw.setdefault("num_frames", T)
    kw.setdefault("image_size", SIZE)
    return DaliClipLoader(split, threads=2, **kw)


def cpu(split, **kw):
    kw.setdefault("num_frames", T)
    kw.setdefault("image_size", SIZE)
    return make_loader(split, workers=0, **kw)


def assert_same_batches(a_loader, b_loader, tol: int, mean_tol: float, *, fallback: bool = False) -> int:
    """b_loader's batches are a_loader's, frames within (tol, mean_tol); a DaliClipLoader b_loader must have
    made every batch itself unless `fallback` (its bad clips' batches are read by the CPU twin)."""
    worst, n, with_clips = 0, 0, 0
    before = (b_loader.dali_batches, b_loader.cpu_batches) if isinstance(b_loader, DaliClipLoader) else None
    for a, b in zip(a_loader, b_loader, strict=True):
        assert a.keys() == b.keys()
        assert b["frames"].dtype == torch.uint8 and b["frames"].shape == a["frames"].shape
        assert torch.equal(a["sample_id"], b["sample_id"]) and torch.equal(a["label"], b["label"])
        assert a["skipped"] == b["skipped"]
        if "augment" in a:
            assert torch.equal(a["augment"], b["augment"])
        d = (a["frames"].int() - b["frames"].cpu().int()).abs()
        if d.numel():
            assert d.max() <= tol and d.float().mean() <= mean_tol, (int(d.max()), float(d.float().mean()))
            worst = max(worst, int(d.max()))
        n += 1
        with_clips += len(b["sample_id"]) > 0
    assert n > 0
    if before is not None and not fallback:
        made = (b_loader.dali_batches - before[0], b_loader.cpu_batches - before[1])
        assert made == (with_clips, 0), f"of {with_clips} batches, DALI made {made[0]}, the CPU {made[1]}"
    return worst


def test_same_frame_indices_as_the_cpu_loader(tmp_path):
    # One solid colour per source frame: a frame taken from the wrong index would be off by >= 20 levels.
    lengths = [3, 8, 13, 1, 20]
    split = make_split([(write_frame_folder(tmp_path / f"c{c}", c, n), 0) for c, n in enumerate(lengths)])
    loader = dali(split, batch_size=2, train=False)
    for batch in loader:
        for frames, sid in zip(batch["frames"], batch["sample_id"].tolist(), strict=True):
            assert_frames_match_sources(frames, sid, lengths[sid])
    assert (loader.dali_batches, loader.cpu_batches) == (3, 0)  # DALI made every batch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train", [False, True])
def test_jpeg_folders_match_the_cpu_loader(textured_split, device, train):
    for epoch in (0, 3):
        kw = dict(batch_size=3, train=train, epoch=epoch)
        # On the GPU nvJPEG decodes: a looser bound than libjpeg-turbo's (tests/conftest.py, TOLERANCES).
        want, got = cpu(textured_split, **kw), dali(textured_split, device=device, **kw)
        assert_same_batches(want, got, *tolerance(device, "dali_levels"))


def test_set_loader_epoch_and_sharded_order(textured_split):
    world = World(rank=1, size=2)
    a = cpu(textured_split, batch_size=1, train=True, sampler=ShardedEpochSampler(7, 42, world))
    b = dali(textured_split, batch_size=1, train=True, sampler=ShardedEpochSampler(7, 42, world))
    next(iter(b))  # a pass left midway must not leak its queued batches into the next one
    for epoch in (0, 2):
        set_loader_epoch(a, epoch)
        set_loader_epoch(b, epoch)
        assert len(a) == len(b) == 3
        assert_same_batches(a, b, FRAME_TOL, FRAME_MEAN_TOL)


def textured_video(path: Path, seed: int, n: int, size: int = 32) -> Path:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for _ in range(n):
            small = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("train", [False, True])
def test_vp9_videos_match_the_cpu_loader(tmp_path, train):
    split = make_split(
        [(textured_video(tmp_path / f"c{c}.webm", c, n), c % 3) for c, n in enumerate([3, 9, 12])]
    )
    assert split_source(split) == "video"
    kw = dict(batch_size=2, train=train)
    assert_same_batches(cpu(split, **kw), dali(split, **kw), VIDEO_TOL, VIDEO_MEAN_TOL)


def test_vp9_frame_indices(tmp_path):
    lengths = [3, 8, 13]
    split = make_split(
        [(write_video(tmp_path / f"c{c}.webm", c, n, "libvpx-vp9"), 0) for c, n in enumerate(lengths)]
    )
    loader = dali(split, batch_size=2, train=False)
    for batch in loader:
        for frames, sid in zip(batch["frames"], batch["sample_id"].tolist(), strict=True):
            assert_frames_match_sources(frames, sid, lengths[sid])
    assert (loader.dali_batches, loader.cpu_batches) == (2, 0)  # DALI made every batch


def test_eval_pass_covers_every_clip_once_in_order(textured_split):
    seen = [i for b in dali(textured_split, batch_size=3, train=False) for i in b["sample_id"].tolist()]
    assert seen == list(range(7))
    shards = [
        dali(textured_split, batch_size=2, train=False, sampler=eval_shard(7, World(r, 2))) for r in range(2)
    ]
    ids = [[i for b in s for i in b["sample_id"].tolist()] for s in shards]
    assert ids == [[0, 2, 4, 6], [1, 3, 5]]


def test_bad_clip_raises_the_cpu_loaders_error(tmp_path, textured_split):
    bad = _bad_inputs(tmp_path)
    for case in ("corrupt.jpg", "truncated.jpg", "empty", "missing"):
        split = make_split([(r.path, r.label) for r in textured_split.records[:2]] + [(bad[case][0], 0)])
        with pytest.raises(Exception) as want:
            list(cpu(split, batch_size=2, train=False))
        with pytest.raises(type(want.value)) as got:
            list(dali(split, batch_size=2, train=False))
        assert str(got.value) == str(want.value) and bad[case][1] in str(got.value)


def test_skip_bad_gives_the_cpu_loaders_batches_and_report(tmp_path, textured_split):
    bad = _bad_inputs(tmp_path)
    good = [(r.path, r.label) for r in textured_split.records]
    cases = ("corrupt.jpg", "truncated.jpg", "empty", "missing")
    split = make_split(good[:2] + [(bad[c][0], 0) for c in cases] + good[2:])
    reports = []
    for loader in (
        cpu(split, batch_size=3, train=False, skip_bad=True),
        dali(split, batch_size=3, train=False, skip_bad=True),
    ):
        report = SkipReport()
        for batch in loader:
            report.add(batch)
        reports.append(report.entries)
    assert reports[0] == reports[1] and len(reports[1]) == len(cases)
    # The batches with a corrupt frame fail in DALI and are read by the CPU twin, which reports the frame.
    assert_same_batches(
        cpu(split, batch_size=3, train=False, skip_bad=True),
        dali(split, batch_size=3, train=False, skip_bad=True),
        FRAME_TOL,
        FRAME_MEAN_TOL,
        fallback=True,
    )


def test_corrupt_video_is_skipped_like_the_cpu_loader(tmp_path):
    good = [(textured_video(tmp_path / f"c{c}.webm", c, 4), 0) for c in range(2)]
    broken = tmp_path / "broken.webm"
    shutil.copy(RESOURCES / "bad_video.webm", broken)
    split = make_split([good[0], (broken, 1), good[1]])
    kw = dict(batch_size=2, train=False, skip_bad=True)
    assert_same_batches(cpu(split, **kw), dali(split, **kw), VIDEO_TOL, VIDEO_MEAN_TOL)


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RDFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RDFER_FRAME_CACHE", raising=False)


def test_build_loader_choice(textured_split, capsys, monkeypatch, cache_env):
    monkeypatch.setattr("rdfer.data.prepare._NOTICES", set())
    data = load_config(
        "quick", [f"data.num_frames={T}", f"data.image_size={SIZE}", "data.workers=0", "data.cache=off"]
    ).data
    kw = dict(train=False, batch_size=2, seed=0, device=torch.device("cpu"), progress=False)
    auto = build_loader(textured_split, data, **kw)
    assert isinstance(auto, torch.utils.data.DataLoader)  # no CUDA device: the CPU loader, with a notice
    assert "CPU loader (no CUDA device" in capsys.readouterr().err
    data.loader = "dali"
    assert isinstance(build_loader(textured_split, data, **kw), DaliClipLoader)
    data.loader = "torch"
    assert isinstance(build_loader(textured_split, data, **kw), torch.utils.data.DataLoader)
    data.loader, data.cache = "dali", "auto"  # DALI fills the frame cache
    cached = build_loader(textured_split, data, **kw)
    assert isinstance(cached, CachedClipLoader) and cached.view.key.decoder == "dali-cpu"
    assert "filled by DALI" in capsys.readouterr().err


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train", [False, True])
def test_a_cache_filled_by_dali_gives_the_dali_loaders_batches(textured_split, cache_env, device, train):
    kw = dict(batch_size=3, train=train, num_frames=T, image_size=SIZE, seed=4)
    storage = "device" if device == "cuda" else "host"  # where a GPU run keeps it
    filled = make_cached_loader(
        textured_split, storage=storage, decoder="dali", device=device, workers=2, progress=False, **kw
    )
    assert filled.view.key.decoder == f"dali-{'gpu' if device == 'cuda' else 'cpu'}"
    # The same decoder gives the same pixels. The DALI loader must have made its batches itself: PIL's resize
    # differs from DALI's, so a filler that fell back to the CPU would not match them either.
    assert_same_batches(filled, dali(textured_split, device=device, **kw), 0, 0.0)
    assert_same_batches(cpu(textured_split, **kw), filled, *tolerance(device, "dali_levels"))


def test_dali_filler_reports_bad_clips_as_the_cpu_loader_does(tmp_path, textured_split, cache_env):
    # Not corrupt.jpg here: DALI 2.4's CPU decoder segfaults now and then on a large batch holding a file that
    # is not an image at all (reproduced with a bare fn.decoders.image pipeline), and the filler's batches are
    # large. A truncated frame fails cleanly in DALI; empty and missing clips never reach it.
    bad = _bad_inputs(tmp_path)
    good = [(r.path, r.label) for r in textured_split.records]
    cases = ("empty", "missing", "truncated.jpg")
    split = make_split(good[:3] + [(bad[c][0], 0) for c in cases] + good[3:])
    kw = dict(batch_size=4, train=False, skip_bad=True)
    filled = make_cached_loader(
        split,
        storage="disk",
        decoder="dali",
        device="cpu",
        workers=2,
        progress=False,
        num_frames=T,
        image_size=SIZE,
        **kw,
    )
    assert sorted(filled.view.problems) == [3, 4, 5]
    assert_same_batches(cpu(split, **kw), filled, FRAME_TOL, FRAME_MEAN_TOL)


def test_importing_rdfer_does_not_import_dali():
    code = "import sys, rdfer, rdfer.train, rdfer.evaluate; print('nvidia.dali' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )
