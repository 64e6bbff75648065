"""The frame cache (rdfer.data.cache, rdfer.data.cached_loader) against its twin, the CPU loader: the same
batches from a store filled once; reuse, rebuild and extension of the store; interrupted fills; bad clips;
where the frames are kept."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import per_device

from rdfer.config import ConfigError, from_dict, load_config
from rdfer.data import cache as cache_module
from rdfer.data import cached_loader as cached_loader_module
from rdfer.data.cache import StoreKey, fill_store, split_root
from rdfer.data.cached_loader import CachedClipLoader, choose_storage, make_cached_loader, measured_storage
from rdfer.data.loader import SkipReport, decode_clips, make_loader, set_loader_epoch
from rdfer.data.prepare import build_loader
from rdfer.data.records import DataError
from rdfer.data.sampling import epoch_order
from rdfer.distributed import ShardedEpochSampler, World

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_loader import _bad_inputs, make_split, write_frame_folder  # noqa: E402

T, SIZE = 8, 16
LENGTHS = [3, 8, 13, 5, 20, 1, 9]
GB = 10**9


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    """Every store of these tests under tmp_path/cache (the package's cache folder), never ~/.cache."""
    monkeypatch.setenv("RDFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RDFER_FRAME_CACHE", raising=False)
    return tmp_path / "cache" / "frames"


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    for c, n in enumerate(LENGTHS):
        write_frame_folder(root / f"clip{c}", c, n, ext=".png" if c == 3 else ".jpg")
    return root


def split_of(root: Path, clips=None, name="train"):
    clips = range(len(LENGTHS)) if clips is None else clips
    return make_split([(root / f"clip{c}", c % 3) for c in clips], name)


@pytest.fixture
def decodes(monkeypatch):
    """Counts the clips the CPU decoder reads (fillers run with workers=0 where a count matters)."""
    import rdfer.data.loader as loader_module

    calls = []
    real = loader_module.load_clip_frames
    monkeypatch.setattr(
        loader_module, "load_clip_frames", lambda p, *a: calls.append(Path(p).name) or real(p, *a)
    )
    return calls


def cached(split, storage="host", workers=0, device="cpu", **kw):
    kw = {"num_frames": T, "image_size": SIZE, **kw}
    return make_cached_loader(
        split, storage=storage, decoder="torch", device=device, workers=workers, progress=False, **kw
    )


def cpu(split, workers=0, **kw):
    return make_loader(split, num_frames=T, image_size=SIZE, workers=workers, **kw)


def assert_same_batches(a_loader, b_loader) -> int:
    n = 0
    for a, b in zip(a_loader, b_loader, strict=True):
        assert a.keys() == b.keys()
        for k in ("frames", "label", "sample_id", "augment"):
            if k in a:
                assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k].cpu()), k
        assert a["skipped"] == b["skipped"]
        n += 1
    assert n > 0
    return n


# ---- the batches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "storage"), per_device({"cpu": ["host", "disk"], "cuda": ["device", "host", "disk"]})
)
@pytest.mark.parametrize("workers", [0, 2])
def test_cached_batches_are_the_cpu_loaders(data_root, device, storage, workers):
    split = split_of(data_root)
    for train in (True, False):
        kw = dict(batch_size=3, train=train, seed=5, augment={"scale": (0.3, 1.0), "jitter": 0.3})
        a, b = cpu(split, workers, **kw), cached(split, storage, workers, device, **kw)
        assert len(a) == len(b)
        for epoch in (0, 1, 4):  # set_loader_epoch moves both to the same order and augmentation
            set_loader_epoch(a, epoch)
            set_loader_epoch(b, epoch)
            batches = list(b)
            assert all(x["frames"].device.type == device for x in batches)
            assert_same_batches(a, batches)


def test_sharded_order_and_a_pass_left_midway(data_root):
    split = split_of(data_root)
    world = World(rank=1, size=2)
    kw = dict(batch_size=1, train=True)
    a = cpu(split, sampler=ShardedEpochSampler(7, 42, world), **kw)
    b = cached(split, sampler=ShardedEpochSampler(7, 42, world), **kw)
    next(iter(b))  # a pass left midway must not leak into the next one
    for epoch in (0, 3):
        set_loader_epoch(a, epoch)
        set_loader_epoch(b, epoch)
        assert len(a) == len(b) == 3
        assert_same_batches(a, b)


def test_filling_the_cache_leaves_the_global_rng_alone(data_root):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    cached(split_of(data_root), workers=2, batch_size=2, train=False)
    assert torch.equal(torch.rand(3), expected)


def test_device_storage_needs_a_cuda_device(data_root):
    with pytest.raises(ConfigError, match="data.cache=device keeps the frames on a CUDA device"):
        cached(split_of(data_root), storage="device", batch_size=2, train=False)


def test_store_rows_are_the_decoded_frames(data_root):
    split = split_of(data_root)
    view = cached(split, batch_size=2, train=False).view
    rows = view.memmap()
    for i, r in enumerate(split.records):
        decoded = next(iter(decode_clips([r.path], T, SIZE, workers=0)))
        assert np.array_equal(rows[view.rows[i]], decoded.numpy())


# ---- the store: reuse, rebuild, extension ----------------------------------------------------------------


def test_a_second_run_reuses_the_store_without_decoding(data_root, decodes, monkeypatch, cache_env):
    split = split_of(data_root)
    kw = dict(batch_size=2, train=True, epoch=1)
    first = [dict(b) for b in cached(split, **kw)]
    assert sorted(decodes) == sorted(f"clip{c}" for c in range(7))
    (store,) = cache_env.iterdir()
    index = json.loads((store / "index.json").read_text())
    assert index["rows"] == 7 and index["key"]["root"] == str(data_root.resolve())
    assert (store / "frames.u8").stat().st_size == 7 * T * 3 * SIZE * SIZE

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached clip was decoded again")

    monkeypatch.setattr("rdfer.data.loader.load_clip_frames", no_decoding)
    assert_same_batches(first, cached(split, storage="disk", **kw))


@pytest.mark.parametrize("change", ["size", "frames", "root", "decoder"])
def test_a_changed_key_is_a_new_store(data_root, tmp_path, decodes, change):
    split = split_of(data_root)
    cached(split, batch_size=2, train=False)
    decodes.clear()
    key = StoreKey("synthetic", str(split_root(split)), T, SIZE, "pil")
    if change == "decoder":  # DALI's pixels differ from PIL's: a store of their own
        assert StoreKey("synthetic", key.root, T, SIZE, "dali-gpu").folder() != key.folder()
        return
    kw = dict(batch_size=2, train=False, num_frames=T, image_size=SIZE)
    if change == "size":
        kw["image_size"] = SIZE + 8
    elif change == "frames":
        kw["num_frames"] = 2 * T
    else:
        shutil.copytree(data_root, tmp_path / "copy")
        split = split_of(tmp_path / "copy")
    batch = next(iter(cached(split, **kw)))
    assert len(decodes) == 7
    assert batch["frames"].shape[1:] == (kw["num_frames"], 3, kw["image_size"], kw["image_size"])


def test_another_split_of_the_same_root_extends_the_store(data_root, decodes, cache_env):
    # DFEW's folds: each split is a subset of the same clip folder; a later fold decodes only its new clips.
    cached(split_of(data_root, range(0, 5)), batch_size=2, train=False)
    decodes.clear()
    split = split_of(data_root, [6, 2, 5, 0], name="test")
    loader = cached(split, batch_size=2, train=False)
    assert sorted(decodes) == ["clip5", "clip6"]
    assert len(list(cache_env.iterdir())) == 1
    assert_same_batches(cpu(split, batch_size=2, train=False), loader)


def test_a_clip_changed_on_disk_is_decoded_again(data_root, decodes):
    split = split_of(data_root)
    cached(split, batch_size=2, train=False)
    shutil.rmtree(data_root / "clip4")
    time.sleep(0.01)  # a new mtime even on coarse clocks
    write_frame_folder(data_root / "clip4", 1, 6)  # other colours, another length
    decodes.clear()
    loader = cached(split, batch_size=2, train=False)
    assert decodes == ["clip4"]
    assert_same_batches(cpu(split, batch_size=2, train=False), loader)


# ---- interrupted fills ----------------------------------------------------------------------------------


def _crashing_decode(after: int):
    def decode(paths):
        for k, out in enumerate(decode_clips(paths, T, SIZE, workers=0)):
            if k == after:
                raise RuntimeError("the filler died")
            yield out

    return decode


@pytest.mark.parametrize("commit_seconds", [0.0, 1e9])
def test_an_interrupted_fill_keeps_only_committed_clips(data_root, decodes, monkeypatch, commit_seconds):
    monkeypatch.setattr(cache_module, "_COMMIT_SECONDS", commit_seconds)
    split = split_of(data_root)
    key = StoreKey(split.dataset, str(split_root(split)), T, SIZE, "pil")
    with pytest.raises(RuntimeError, match="died"):
        fill_store(split, key, _crashing_decode(after=3), progress=False)
    committed = 3 if commit_seconds == 0 else 0  # committing after every clip, or never before the end
    index = json.loads((key.folder() / "index.json").read_text()) if committed else {"rows": 0}
    assert index["rows"] == committed
    decodes.clear()
    loader = cached(split, batch_size=3, train=True)
    assert len(decodes) == 7 - committed  # the rest, written over the uncommitted rows
    assert_same_batches(cpu(split, batch_size=3, train=True), loader)


_KILLED_FILLER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_loader import make_split
from rdfer.data import cache
from rdfer.data.loader import decode_clips
cache._COMMIT_SECONDS = 0.0
root = Path(sys.argv[2])
split = make_split([(root / f"clip{c}", c % 3) for c in range(7)])
key = cache.StoreKey(split.dataset, str(cache.split_root(split)), 8, 16, "pil")
def decode(paths):
    for k, out in enumerate(decode_clips(paths, 8, 16, workers=0)):
        if k == 4:
            Path(sys.argv[3]).touch()
            time.sleep(600)
        yield out
cache.fill_store(split, key, decode, progress=False)
"""


def test_a_killed_filler_leaves_a_usable_store(data_root, tmp_path, decodes, cache_env):
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_FILLER, str(Path(__file__).parent), str(data_root), str(ready)],
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the filler did not reach its fifth clip"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    split = split_of(data_root)
    loader = cached(split, batch_size=2, train=False)
    assert len(decodes) == 3  # four were committed before the kill
    assert_same_batches(cpu(split, batch_size=2, train=False), loader)


# ---- bad clips ------------------------------------------------------------------------------------------


@pytest.fixture
def bad_split(tmp_path, data_root):
    bad = _bad_inputs(tmp_path)
    cases = ("corrupt.jpg", "truncated.jpg", "empty", "missing")
    records = [(data_root / f"clip{c}", c % 3) for c in range(3)] + [(bad[c][0], 0) for c in cases]
    return make_split(records + [(data_root / f"clip{c}", c % 3) for c in range(3, 7)]), len(cases)


def test_bad_clips_are_skipped_and_reported_as_the_cpu_loader_does(bad_split, decodes):
    split, n_bad = bad_split
    for train in (False, True):
        kw = dict(batch_size=3, train=train, skip_bad=True)
        reports = []
        for loader in (cpu(split, **kw), cached(split, **kw)):
            report = SkipReport()
            for batch in loader:
                report.add(batch)
            reports.append(report.entries)
        # Training drops the last partial batch, and with it the bad clips that the epoch's order put there.
        seen = epoch_order(len(split), 42, 0)[:9] if train else range(len(split))
        assert reports[0] == reports[1] and len(reports[0]) == sum(3 <= i < 3 + n_bad for i in seen)
        assert_same_batches(cpu(split, **kw), cached(split, **kw))
    decodes.clear()
    cached(split, batch_size=3, train=False, skip_bad=True)
    assert len(decodes) == n_bad  # never stored: tried again by each run, the good clips are not


def test_a_bad_clip_raises_the_cpu_loaders_error_at_its_batch(bad_split):
    split, _ = bad_split
    with pytest.raises(DataError) as want:
        list(cpu(split, batch_size=2, train=False))
    loader = cached(split, batch_size=2, train=False)  # the fill itself does not raise
    seen = []
    with pytest.raises(DataError) as got:
        for batch in loader:
            seen.append(batch["sample_id"].tolist())
    assert str(got.value) == str(want.value)
    assert seen == [[0, 1]]  # the batches before the bad clip's come first, as from the CPU loader


# ---- where the frames are kept --------------------------------------------------------------------------


def test_choose_storage_from_the_free_memory():
    gpu, cpu_device = torch.device("cuda", 0), torch.device("cpu")
    # An H200: 0.35 * 140 = 49 GB stay free for training, so 90 GB are spare for frames; half the host's
    # 120 GB (60 GB) may hold them there.
    h200 = dict(free_device=139 * GB, total_device=140 * GB, free_host=120 * GB)
    assert choose_storage(28 * GB, gpu, **h200)[0] == "device"  # DFEW at 64 x 112 x 112
    assert choose_storage(95 * GB, gpu, **h200)[0] == "disk"  # FERV39K: fits neither
    busy = {**h200, "free_device": 60 * GB}  # another job holds the GPU: 11 GB spare
    assert choose_storage(28 * GB, gpu, **busy)[0] == "host"
    assert choose_storage(28 * GB, gpu, **busy, local_processes=4)[0] == "disk"  # 4 ranks share the host
    assert choose_storage(28 * GB, cpu_device, **h200)[0] == "host"
    storage, why = choose_storage(GB // 2, cpu_device, free_host=20 * GB)
    assert storage == "host" and "no CUDA device" in why
    assert choose_storage(GB // 2, cpu_device, free_host=GB // 2)[0] == "disk"


def test_measured_storage_reads_the_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * GB, 140 * GB))
    monkeypatch.setattr(cached_loader_module, "_available_host_memory", lambda: 100 * GB)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    gpu = torch.device("cuda", 0)
    assert measured_storage(40 * GB, gpu)[0] == "device"  # 100 - 0.35 * 140 = 51 GB spare
    assert measured_storage(60 * GB, gpu)[0] == "disk"  # nor in half of the host's 100 GB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert measured_storage(20 * GB, torch.device("cpu"))[0] == "disk"  # 50 GB shared by 4 processes


def test_the_store_goes_where_rdfer_frame_cache_says(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RDFER_FRAME_CACHE", str(tmp_path / "scratch"))
    loader = cached(split_of(data_root), batch_size=2, train=False)
    assert loader.view.folder.parent == tmp_path / "scratch"


# ---- the config switch and build_loader ----------------------------------------------------------------


def _data(*overrides):
    return load_config(
        "quick", [f"data.num_frames={T}", f"data.image_size={SIZE}", "data.workers=0", *overrides]
    ).data


def test_build_loader_uses_the_cache_by_default(data_root, capsys, monkeypatch):
    monkeypatch.setattr("rdfer.data.prepare._NOTICES", set())
    split = split_of(data_root)
    kw = dict(train=True, batch_size=2, seed=0, device=torch.device("cpu"), progress=False)
    loader = build_loader(split, _data(), **kw)
    assert isinstance(loader, CachedClipLoader) and loader.storage == "host"
    assert "from the frame cache in host memory" in capsys.readouterr().err
    assert isinstance(build_loader(split, _data("data.cache=disk"), **kw), CachedClipLoader)
    off = build_loader(split, _data("data.cache=off"), **kw)
    assert isinstance(off, torch.utils.data.DataLoader)
    assert "decoded every epoch by the CPU loader" in capsys.readouterr().err
    assert_same_batches(off, loader)
    with pytest.raises(ConfigError, match="data.cache=device"):
        build_loader(split, _data("data.cache=device"), **kw)


def test_without_disk_room_auto_decodes_every_epoch_and_forced_is_an_error(data_root, capsys, monkeypatch):
    monkeypatch.setattr("rdfer.data.prepare._NOTICES", set())
    full = shutil._ntuple_diskusage(10 * GB, 10 * GB - 1000, 1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    split = split_of(data_root)
    kw = dict(train=False, batch_size=2, seed=0, device=torch.device("cpu"), progress=False)
    assert isinstance(build_loader(split, _data(), **kw), torch.utils.data.DataLoader)
    assert "no room for the frame cache" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="RDFER_FRAME_CACHE"):
        build_loader(split, _data("data.cache=host"), **kw)


def test_the_cache_switch_in_the_config():
    assert load_config("quick").data.cache == "auto"
    with pytest.raises(ConfigError, match="data.cache must be one of"):
        load_config(None, ["data.cache=ram"])
    old = load_config("quick").to_dict()
    del old["data"]["cache"]
    old["data"]["cache_frames"] = True  # a checkpoint's config from before the frame cache
    assert from_dict(old).data.cache == "auto"
