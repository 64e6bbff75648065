"""rdfer under ordinary mistakes and bad input: each case ends in one line on stderr that names the file or
key, with its documented exit code (2: usage or config, 1: data or runtime), no traceback, nothing already on
disk lost, and nothing executed from a file.

Every case runs a command line in this process (the `main` of rdfer.train / evaluate / predict / data), on
SynthDFER `tiny` and a tiny checkpoint trained once for this module."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from rdfer.evaluate import main as evaluate_main
from rdfer.prediction import main as predict_main
from rdfer.train import main as train_main

TINY = [
    "data.num_frames=16",
    "data.image_size=32",
    "data.batch_size=8",
    "data.workers=0",
    "model.encoder=small",
    "model.feature_dim=16",
    "model.lstm_hidden=8",
    "model.lstm_layers=1",
    "model.heads=2",
    "model.synopsis_frames=8",
    "model.clip_length=2",
    "model.stride=2",
    "optim.epochs=1",
    "optim.warmup_epochs=1",
    "robust.warmup=0.34",
]
RESOURCES = Path(__file__).resolve().parent / "resources"


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """A finished one-epoch run on SynthDFER tiny: its folder (last.pt, best.pt, ...)."""
    out = tmp_path_factory.mktemp("trained")
    assert (
        train_main(
            ["--no-progress", "--dataset", "synthetic", "--root", str(tiny_root), "--out", str(out), *TINY]
        )
        == 0
    )
    return out


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line_error(capsys, code: int, expected_code: int, *names: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def train_args(root, out, *extra):
    return ["--no-progress", "--dataset", "synthetic", "--root", str(root), "--out", str(out), *TINY, *extra]


# ------------------------------------------------------------------------------------------ config and usage


def test_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [0.1\n  epochs: 3\n")
    one_line_error(
        capsys, train_main(["--config", str(bad), "--out", str(tmp_path / "o")]), 2, "bad.yaml:", "YAML"
    )


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--device", "gpu"], ["'gpu'", "cuda:N"]),
        (["model.synopsis_frames=0"], ["model.synopsis_frames"]),
        (["run.eval_every=0"], ["run.eval_every"]),
        (["data.workers=-1"], ["data.workers"]),
        (["optim.lrr=1"], ["optim.lrr"]),
        (["--folds", "x"], ["--folds", "'x'"]),
        (["data.batch_size=64"], ["data.batch_size", "42 clips"]),
        (["optim.lr=[1"], ["optim.lr"]),
    ],
)
def test_bad_settings_are_usage_errors(tiny_root, tmp_path, capsys, extra, names):
    one_line_error(capsys, train_main(train_args(tiny_root, tmp_path / "o", *extra)), 2, *names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it(tiny_root, tmp_path, capsys):
    one_line_error(capsys, train_main(train_args(tiny_root, tmp_path / "o", "--device", "cuda")), 2, "CUDA")


def test_a_dataset_that_needs_a_root(tmp_path, capsys):
    one_line_error(
        capsys, train_main(["--config", "dfew", "--out", str(tmp_path / "o")]), 2, "data.root", "--root"
    )


@pytest.mark.parametrize("kind", ["file", "below_a_file"])
def test_an_out_that_cannot_be_a_folder(tiny_root, tmp_path, capsys, kind):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if kind == "file" else blocker / "run"
    one_line_error(capsys, train_main(train_args(tiny_root, out)), 2, str(out))
    assert blocker.read_text() == "not a folder"


# ------------------------------------------------------------------------------------------ nothing lost


def test_a_finished_run_is_not_overwritten_without_overwrite(trained, tiny_root, capsys):
    before = snapshot(trained)
    one_line_error(
        capsys, train_main(train_args(tiny_root, trained)), 2, str(trained), "--resume", "--overwrite"
    )
    assert snapshot(trained) == before


def test_overwrite_replaces_a_run_only_once_the_new_one_has_an_epoch(trained, tiny_root, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    (out / "summary.json").write_text("{}")  # the old run's files ...
    assert train_main(train_args(tiny_root, out, "--overwrite", "optim.epochs=2", "run.eval_every=2")) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # ... replaced, not appended to
    assert (out / "summary.json").read_text() != "{}"
    assert len(list((out / "tensorboard").iterdir())) == 1


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda d: d / "absent.pt", ["absent.pt", "no such file"]),
        (lambda d: _truncated(d), ["cut.pt", "not a readable checkpoint"]),
        (lambda d: _foreign(d), ["foreign.pt", "not an rdfer checkpoint"]),
        (lambda d: d / "best.pt", ["best.pt", "weights only", "last.pt"]),
    ],
)
def test_resume_from_something_that_is_not_a_last_checkpoint(
    trained, tiny_root, tmp_path, capsys, make, names
):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    path = make(folder)
    before = snapshot(folder)
    one_line_error(capsys, train_main(train_args(tiny_root, folder, "--resume", str(path))), 1, *names)
    assert snapshot(folder) == before


def _truncated(folder: Path) -> Path:
    data = (folder / "last.pt").read_bytes()
    (folder / "cut.pt").write_bytes(data[: len(data) // 3])
    return folder / "cut.pt"


def _foreign(folder: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, folder / "foreign.pt")
    return folder / "foreign.pt"


class _Payload:
    """Unpickling this calls Path.touch: what a tampered checkpoint could do with any command."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_a_checkpoint_that_would_run_code_is_refused_everywhere(
    trained, tiny_root, tmp_path, capsys, command
):
    state = torch.load(trained / "last.pt", weights_only=True)
    marker = tmp_path / "code-ran"
    state["config"] = _Payload(marker)
    evil = tmp_path / "evil.pt"
    torch.save(state, evil)
    argv = {
        "train": lambda: train_main(train_args(tiny_root, tmp_path / "o", "--resume", str(evil))),
        "evaluate": lambda: evaluate_main(["--checkpoint", str(evil), "--no-progress"]),
        "predict": lambda: predict_main([str(tiny_root), "--checkpoint", str(evil)]),
    }[command]
    one_line_error(capsys, argv(), 1, "evil.pt", "refused")
    assert not marker.exists()


def test_resume_with_an_override_after_it(trained, tiny_root, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    # argparse would take the override as --resume's path; it is an override, and a changed key is refused.
    one_line_error(
        capsys, train_main(train_args(tiny_root, folder, "--resume", "optim.lr=0.5")), 2, "optim.lr"
    )


def test_resume_with_more_epochs_extends_a_finished_run(trained, tiny_root, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    assert train_main(train_args(tiny_root, folder, "--resume", "optim.epochs=2")) == 0
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert 0 < history[1]["lr"] < history[0]["lr"]  # re-planned: falls from where it was, not restarted


# ------------------------------------------------------------------------------------------ data


def test_a_root_without_its_frames_is_found_before_training(tiny_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    shutil.rmtree(root / "Clip")
    out = tmp_path / "o"
    one_line_error(capsys, train_main(train_args(root, out)), 1, "missing", "--root")
    assert not (out / "last.pt").exists()


def test_a_corrupt_frame_during_training_names_the_file_and_the_switch(tiny_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    frame = sorted((root / "Clip" / "clip_224x224").glob("*/*.jpg"))[0]
    shutil.copy(RESOURCES / "corrupt.jpg", frame)
    for workers in ("data.workers=0", "data.workers=1"):
        line = one_line_error(
            capsys, train_main(train_args(root, tmp_path / workers, workers)), 1, frame.name
        )
        assert "data.skip_bad" in line


def test_an_empty_test_split_is_found_before_training(tmp_path, capsys, tiny_root):
    frames = sorted((tiny_root / "Clip" / "clip_224x224").iterdir())
    (tmp_path / "train.csv").write_text(
        "path,label\n" + "".join(f"{f},{i % 3}\n" for i, f in enumerate(frames))
    )
    (tmp_path / "test.csv").write_text("path,label\n")
    out = tmp_path / "o"
    code = train_main(
        [
            "--no-progress",
            "--dataset",
            "manifest",
            "--root",
            str(tmp_path / "train.csv"),
            "--out",
            str(out),
            *TINY,
        ]
    )
    one_line_error(capsys, code, 1, "test", "no clips")
    assert not (out / "last.pt").exists()


def test_a_diverging_run_never_exits_0_nor_saves_non_finite_weights(tiny_root, tmp_path, capsys):
    out = tmp_path / "o"
    code = train_main(train_args(tiny_root, out, "optim.lr=1e12", "optim.warmup_epochs=0", "optim.epochs=2"))
    one_line_error(capsys, code, 1, "finite")
    for name in ("last.pt", "best.pt"):
        if (out / name).exists():
            state = torch.load(out / name, weights_only=True)
            assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ evaluate, predict


def test_evaluate_with_a_root_that_is_not_there(trained, tmp_path, capsys):
    state = torch.load(trained / "last.pt", weights_only=True)
    state["config"]["data"]["root"] = "relative/DFEW"
    moved = tmp_path / "moved.pt"
    torch.save(state, moved)
    one_line_error(
        capsys, evaluate_main(["--checkpoint", str(moved), "--no-progress"]), 1, "relative/DFEW", "--root"
    )


def test_evaluate_output_folder_is_checked_first(trained, tmp_path, capsys):
    argv = ["--checkpoint", str(trained / "best.pt"), "--output", str(tmp_path / "nodir" / "e.json")]
    one_line_error(capsys, evaluate_main(argv), 2, "nodir")


@pytest.mark.parametrize(
    ("extra", "code", "names"),
    [
        (["--output", "NODIR/p.json"], 2, ["nodir"]),
        (["--margin", "-1"], 2, ["--margin"]),
        (["--device", "gpu"], 2, ["'gpu'"]),
    ],
)
def test_predict_usage_errors_come_before_any_work(trained, tiny_root, tmp_path, capsys, extra, code, names):
    extra = [e.replace("NODIR", str(tmp_path / "nodir")) for e in extra]
    one_line_error(
        capsys, predict_main([str(tiny_root), "--checkpoint", str(trained / "best.pt"), *extra]), code, *names
    )


def test_predict_refuses_a_still_image(trained, tmp_path, capsys):
    image = tmp_path / "face.jpg"
    shutil.copy(sorted((RESOURCES).glob("*.jpg"))[0], image)
    code = predict_main([str(image), "--checkpoint", str(trained / "best.pt")])
    one_line_error(capsys, code, 1, "face.jpg", "still image")


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [\n")
    monkeypatch.setenv("RDFER_DEBUG", "1")
    from rdfer.errors import ConfigError

    with pytest.raises(ConfigError):
        train_main(["--config", str(bad)])
    monkeypatch.delenv("RDFER_DEBUG")
    assert os.environ.get("RDFER_DEBUG") is None


# ------------------------------------------------------------------------------------------ second round


@pytest.mark.parametrize("how", ["checked_first", "write_fails"])
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(
    trained, tiny_root, tmp_path, capsys, monkeypatch, how
):
    from rdfer import files

    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    before = (folder / "last.pt").read_bytes()
    if how == "checked_first":
        monkeypatch.setattr(files, "free_bytes", lambda folder: 1000)
    else:  # the room went while writing (another job, a quota)

        def no_room(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(files.os, "fsync", no_room)
    code = train_main(train_args(tiny_root, folder, "--resume", "optim.epochs=2"))
    one_line_error(capsys, code, 1, "last.pt", "no room on the disk", "needs", "free")
    assert (folder / "last.pt").read_bytes() == before
    assert not list(folder.glob(".*.tmp"))


def test_folds_are_checked_before_the_first_trains(tiny_root, tmp_path, capsys):
    out = tmp_path / "o"
    one_line_error(capsys, train_main(train_args(tiny_root, out, "--folds", "1-9")), 2, "fold 1 only", "2")
    assert not out.exists()


def test_an_empty_environment_variable_is_unset(monkeypatch, tmp_path):
    from rdfer.environment import cache_dir, frame_cache_dir
    from rdfer.ops import dispatch
    from rdfer.training import _Heartbeat

    monkeypatch.chdir(tmp_path)
    for name in ("RDFER_CACHE", "RDFER_FRAME_CACHE", "RDFER_KERNELS", "RDFER_LOG_SECONDS"):
        monkeypatch.setenv(name, "")
    assert cache_dir() == Path.home() / ".cache" / "rdfer"  # not ./ of wherever the command runs
    assert frame_cache_dir() == Path.home() / ".cache" / "rdfer" / "frames"
    assert dispatch.mode() == "auto"
    assert _Heartbeat(enabled=True).every == 60


def test_a_likely_typo_among_manifest_classes_is_named(tmp_path, capsys):
    from rdfer.data.datasets import load_split

    rows = [f"c{i},{'happy' if i % 2 else 'sad'}" for i in range(199)] + ["c199,hapy"]
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    split = load_split("manifest", tmp_path / "train.csv", "train")
    assert split.classes == ("happy", "hapy", "sad")
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "'hapy' (1 clips)" in err and "'sad'" not in err


def test_evaluate_no_progress_prints_no_bar(trained, capsys):
    assert evaluate_main(["--checkpoint", str(trained / "best.pt"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "%|" not in err and "it/s" not in err, err


def test_predict_a_folder_without_clips(trained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no clips here")
    code = predict_main([str(empty), "--checkpoint", str(trained / "best.pt")])
    one_line_error(capsys, code, 1, str(empty), "no videos or frame images")


def test_ties_go_to_the_first_best_epoch():
    from rdfer.run_log import best_row

    history = [{"epoch": 1, "test_war": 0.5}, {"epoch": 2}, {"epoch": 3, "test_war": 0.5}]
    assert best_row(history)["epoch"] == 1
    assert best_row([{"epoch": 1}]) is None
