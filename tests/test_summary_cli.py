"""`python -m rdfer.data summary`: JSON counts on the real split files, and --verify on tiny fake datasets."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rdfer.data.__main__ import main
from rdfer.data.dfew import dfew_split_file

DFEW_FOLD1_TRAIN = {
    "happy": 1956,
    "sad": 1515,
    "neutral": 2135,
    "angry": 1738,
    "surprise": 1175,
    "disgust": 116,
    "fear": 721,
}


def _summary(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["summary", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else None), err


def test_dfew_summary_json(capsys, datasets):
    code, report, _ = _summary(capsys, "--dataset", "dfew", "--root", str(datasets / "dfew"))
    assert code == 0
    assert report["dataset"] == "dfew" and report["fold"] == 1 and report["root"] == str(datasets / "dfew")
    assert report["classes"] == list(DFEW_FOLD1_TRAIN)
    assert report["splits"]["train"] == {"clips": 9356, "per_class": DFEW_FOLD1_TRAIN}
    assert report["splits"]["test"]["clips"] == 2341
    assert list(report["splits"]["test"]["per_class"].values()) == [489, 379, 534, 435, 294, 29, 181]
    assert "problems" not in report


def test_summary_subprocess_fold2(datasets):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rdfer.data",
            "summary",
            "--dataset",
            "dfew",
            "--root",
            str(datasets / "dfew"),
            "--fold",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["fold"] == 2
    assert report["splits"]["train"]["clips"] + report["splits"]["test"]["clips"] == 11697


def test_ferv39k_and_mafw_summaries(capsys, tmp_path, datasets):
    _, ferv, _ = _summary(capsys, "--dataset", "ferv39k", "--root", str(datasets / "ferv39k"))
    assert (ferv["splits"]["train"]["clips"], ferv["splits"]["test"]["clips"]) == (31088, 7847)
    assert ferv["classes"] == ["Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear"]
    # MAFW's split folder given explicitly, from a root that holds nothing else.
    _, mafw, _ = _summary(
        capsys,
        "--dataset",
        "mafw",
        "--root",
        str(tmp_path),
        "--mafw-split-dir",
        str(datasets / "mafw" / "split"),
    )
    assert (mafw["splits"]["train"]["clips"], mafw["splits"]["test"]["clips"]) == (7333, 1839)
    assert mafw["splits"]["train"]["per_class"]["anger"] == 1112 and len(mafw["classes"]) == 11


@pytest.mark.parametrize(
    ("args", "problem", "exit_code"),
    [
        (["--dataset", "dfew", "--fold", "3"], "set_3.csv: split file not found", 1),  # data
        (["--dataset", "dfew", "--fold", "6"], "folds 1..5, not fold 6", 2),  # usage
        (["--dataset", "ferv39k", "--source", "video"], "frame folders only", 2),
        (["--dataset", "manifest", "--source", "video"], "takes no option source", 2),
    ],
)
def test_summary_bad_input_is_one_line_with_its_exit_code(capsys, tmp_path, args, problem, exit_code):
    code, report, err = _summary(capsys, "--root", str(tmp_path), *args)
    assert code == exit_code and report is None
    assert problem in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- --verify on fake datasets


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def _corrupt(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 600, dtype=np.uint8).tobytes())


def _video(path: Path, frames: int = 4) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(frames):
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _fake_dfew(root: Path) -> None:
    """Train: 1 good, 2 empty folder, 3 missing, 4 one good + two corrupt frames; test: 6 good, 7 missing."""
    for split, rows in {"train": "1,1\n2,2\n3,3\n4,4\n", "test": "6,5\n7,6\n"}.items():
        path = dfew_split_file(root, split, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("video_name,label\n" + rows)
    clips = root / "Clip" / "clip_224x224"
    for i in range(3):
        _jpeg(clips / "00001" / f"{i + 1}.jpg", i)
        _jpeg(clips / "00006" / f"{i + 1}.jpg", 10 + i)
    (clips / "00002").mkdir()
    _jpeg(clips / "00004" / "1.jpg", 20)
    _corrupt(clips / "00004" / "2.jpg", 21)
    _corrupt(clips / "00004" / "3.jpg", 22)


def test_verify_lists_every_problem(capsys, tmp_path):
    _fake_dfew(tmp_path)
    code, report, err = _summary(
        capsys, "--dataset", "dfew", "--root", str(tmp_path), "--verify", "--workers", "2"
    )
    assert code == 1
    assert report["splits"]["train"]["clips"] == 4 and report["splits"]["test"]["clips"] == 2
    found = [(p["split"], p["key"]) for p in report["problems"]]
    assert found == [
        ("train", "00002"),
        ("train", "00003"),
        ("train", "00004"),
        ("train", "00004"),
        ("test", "00007"),
    ]
    by_key = {}
    for p in report["problems"]:
        by_key.setdefault(p["key"], []).append(p["problem"])
        assert p["path"] == str(tmp_path / "Clip" / "clip_224x224" / p["key"])
    assert "2.jpg" in by_key["00004"][0] and "3.jpg" in by_key["00004"][1]
    assert "verify" in err  # the progress bar goes to stderr, not into the JSON


def test_verify_clean_dataset_exits_0(capsys, tmp_path):
    _fake_dfew(tmp_path)
    for split, rows in {"train": "1,1\n", "test": "6,5\n"}.items():
        dfew_split_file(tmp_path, split, 1).write_text("video_name,label\n" + rows)
    code, report, _ = _summary(capsys, "--dataset", "dfew", "--root", str(tmp_path), "--verify")
    assert code == 0 and report["problems"] == []


def test_verify_manifest_with_videos(capsys, tmp_path):
    (tmp_path / "v").mkdir()
    _video(tmp_path / "v" / "good.mp4")
    _corrupt(tmp_path / "v" / "bad.mp4", 3)
    _jpeg(tmp_path / "f" / "0001.jpg", 4)
    (tmp_path / "train.csv").write_text("path,label\nv/good.mp4,happy\nv/bad.mp4,sad\nf,happy\n")
    (tmp_path / "test.csv").write_text("path,label\nv/gone.mp4,sad\nv/good.mp4,sad\n")
    code, report, _ = _summary(
        capsys, "--dataset", "manifest", "--root", str(tmp_path / "train.csv"), "--verify"
    )
    assert code == 1 and report["classes"] == ["happy", "sad"]
    assert report["splits"]["test"]["per_class"] == {"happy": 0, "sad": 2}
    found = [(p["split"], p["key"]) for p in report["problems"]]
    assert found == [("train", "v/bad.mp4"), ("test", "v/gone.mp4")]


def test_verify_keeps_going_when_the_checker_fails(capsys, tmp_path, monkeypatch):
    # The summary's own bookkeeping, with a stand-in checker: several problems per clip, and a checker that
    # raises on one clip must not hide the problems of the clips after it.
    def verify_record(record, whole=True):
        if record.key == "00002":
            raise RuntimeError("decoder crashed")
        return [f"problem {i} of {record.key}" for i in range(int(record.key) % 3)]

    monkeypatch.setitem(sys.modules, "rdfer.data.frames", types.SimpleNamespace(verify_record=verify_record))
    _fake_dfew(tmp_path)
    code, report, _ = _summary(capsys, "--dataset", "dfew", "--root", str(tmp_path), "--verify")
    assert code == 1
    assert [(p["key"], p["problem"]) for p in report["problems"]] == [
        ("00001", "problem 0 of 00001"),
        ("00002", "could not be checked: RuntimeError: decoder crashed"),
        ("00004", "problem 0 of 00004"),
        ("00007", "problem 0 of 00007"),
    ]
