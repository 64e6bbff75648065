"""A training run under stops and races: one run per --out, Ctrl-C and SIGTERM at a chosen instant of a
checkpoint write, a process killed outright, and --resume repairing what a kill left. Each case checks the
exit code, the line on stderr, and that last.pt, best.pt, metrics.jsonl and summary.json agree.

Timing is deterministic: rdfer.files.on_write (a test hook) holds the checkpoint writer at a chosen stage
while the signal is delivered and handled (rdfer.stopping.requested), then lets it go on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_mistakes import one_line_error, snapshot, train_args

from rdfer import files, run_lock, stopping
from rdfer.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def _epoch(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"] + 1


def _metrics(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_consistent(out: Path, finished: bool) -> None:
    """last.pt is the last logged epoch, best.pt the history's best (first of ties), no temporary files; a
    summary only for a finished run, naming best.pt's epoch."""
    last = torch.load(out / "last.pt", weights_only=True)
    history = last["history"]
    assert _metrics(out) == [h["epoch"] for h in history] == list(range(1, last["epoch"] + 2))
    evaluated = [h for h in history if "test_war" in h]
    best = max(evaluated, key=lambda h: h["test_war"])
    assert _epoch(out / "best.pt") == best["epoch"]
    assert not list(out.glob(".*.tmp")), list(out.glob(".*.tmp"))
    assert (out / "summary.json").exists() == finished
    if finished:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["best_war_epoch"]["epoch"] == best["epoch"]
        assert summary["last_epoch"]["epoch"] == history[-1]["epoch"]


def _signal_at(monkeypatch, name: str, stage: str, signum: int, times: int = 1) -> list[str]:
    """Deliver `signum` to this process when the writer reaches `stage` of `name`, and hold the writer there
    until the main thread has handled it. Returns the (file, stage) log of the writer."""
    seen: list[str] = []

    def hook(path: Path, at: str) -> None:
        seen.append(f"{path.name}:{at}")
        if path.name == name and at == stage and seen.count(f"{name}:{stage}") <= times:
            os.kill(os.getpid(), signum)
            assert stopping.requested.wait(timeout=120), "the signal was not handled"

    monkeypatch.setattr(files, "on_write", hook)
    return seen


@pytest.mark.parametrize(
    ("name", "stage", "signum", "code"),
    [
        ("last.pt", "written", signal.SIGINT, 130),  # Ctrl-C while last.pt is half-written
        ("last.pt", "replaced", signal.SIGTERM, 143),  # between last.pt and best.pt
        ("best.pt", "written", signal.SIGTERM, 143),  # while best.pt is half-written
    ],
)
def test_a_stop_during_a_checkpoint_write_leaves_every_file_whole(
    tiny_root, tmp_path, capsys, monkeypatch, name, stage, signum, code
):
    out = tmp_path / "run"
    seen = _signal_at(monkeypatch, name, stage, signum)
    assert train_main(train_args(tiny_root, out, "optim.epochs=3")) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == (
        "interrupted (SIGTERM)" if code == 143 else "interrupted"
    )
    assert seen == ["last.pt:written", "last.pt:replaced", "best.pt:written", "best.pt:replaced"]
    assert_consistent(out, finished=False)
    assert _metrics(out) == [1]
    monkeypatch.setattr(files, "on_write", lambda path, at: None)
    assert train_main(train_args(tiny_root, out, "optim.epochs=3", "--resume")) == 0
    assert_consistent(out, finished=True)
    assert _metrics(out) == [1, 2, 3]


def test_a_second_signal_while_waiting_for_the_writer_changes_nothing(
    tiny_root, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    _signal_at(monkeypatch, "last.pt", "written", signal.SIGTERM, times=2)  # the second lands on a held stop
    assert train_main(train_args(tiny_root, out, "optim.epochs=2")) == 143
    assert "Traceback" not in capsys.readouterr().err
    assert_consistent(out, finished=False)


# A training process that sends itself signal SIGNAL when its writer has written FILE's temporary file and
# not yet renamed it, and holds the writer there until the main thread has taken the signal (not SIGKILL).
_SIGNAL_AT = """
import os, signal, sys
from rdfer import files, stopping
from rdfer.train import main
def hook(path, stage):
    if path.name == os.environ["FILE"] and stage == "written" and not stopping.requested.is_set():
        os.kill(os.getpid(), int(os.environ["SIGNAL"]))
        stopping.requested.wait(timeout=120)
files.on_write = hook
sys.exit(main(sys.argv[1:]))
"""


def _run_signalled(argv: list[str], name: str, signum: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "FILE": name, "SIGNAL": str(int(signum))}
    command = [sys.executable, "-c", _SIGNAL_AT, *argv]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_process_stopped_inside_a_write_exits_with_its_code(tiny_root, tmp_path, signum, code):
    """What the shell and a scheduler see: the exit code, one line, no abort (was SIGABRT, 134)."""
    out = tmp_path / "run"
    result = _run_signalled(train_args(tiny_root, out, "optim.epochs=2"), "last.pt", signum)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "terminate called" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("interrupted")
    assert_consistent(out, finished=False)


def test_resume_repairs_what_a_killed_run_left(tiny_root, tmp_path, capsys):
    """SIGKILL (no handler can run) after last.pt and inside best.pt's write: no best.pt, a temporary file;
    --resume writes best.pt from last.pt, removes the temporary file and finishes the summary."""
    out = tmp_path / "run"
    argv = train_args(tiny_root, out)
    killed = _run_signalled(argv, "best.pt", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "last.pt").exists() and not (out / "best.pt").exists()
    assert [p.name for p in out.glob(".*.tmp")] == [f".best.pt.{_pid_of(out)}.tmp"]
    assert train_main([*argv, "--resume"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert_consistent(out, finished=True)
    best, last = (torch.load(out / n, weights_only=True)["model"] for n in ("best.pt", "last.pt"))
    assert all(torch.equal(best[k], last[k]) for k in last)


def _pid_of(out: Path) -> str:
    return (out / run_lock.LOCK_NAME).read_text().split()[1]


def test_resume_rewrites_a_best_pt_of_another_epoch(tiny_root, tmp_path):
    out = tmp_path / "run"
    assert train_main(train_args(tiny_root, out)) == 0
    state = torch.load(out / "best.pt", weights_only=True)
    torch.save({**state, "epoch": 7}, out / "best.pt")  # what an older run's best.pt would say
    (out / "summary.json").unlink()
    assert train_main(train_args(tiny_root, out, "--resume")) == 0
    assert_consistent(out, finished=True)


# ----------------------------------------------------------------------------------------- one run per --out


def test_a_locked_out_is_refused_before_any_data_is_read(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    lock = run_lock.hold(out)  # another run: flock conflicts between two open files, even in one process
    try:
        before = snapshot(out)
        line = one_line_error(capsys, train_main(train_args(tmp_path / "no-such-root", out)), 2, str(out))
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in line
        assert snapshot(out) == before
    finally:
        lock.release()


def test_a_second_run_started_during_the_first_is_refused(tiny_root, tmp_path, capsys, monkeypatch):
    """The race: a second run into the same --out, started while the first is mid-run (held inside its
    last.pt write), refuses in one line; the first finishes alone."""
    out = tmp_path / "run"
    argv = train_args(tiny_root, out)
    second: list[subprocess.CompletedProcess] = []

    def hook(path: Path, at: str) -> None:
        if not second:
            command = [sys.executable, "-m", "rdfer.train", *argv, "--overwrite"]
            second.append(subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600))

    monkeypatch.setattr(files, "on_write", hook)
    assert train_main(argv) == 0
    (result,) = second
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {os.getpid()} on host {socket.gethostname()}" in lines[0], lines
    assert_consistent(out, finished=True)
    assert len(list((out / "tensorboard").iterdir())) == 1


def test_a_killed_run_does_not_block_the_next(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    code = (
        "import sys; from rdfer.run_lock import hold; hold(sys.argv[1]); print('held', flush=True); input()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(out)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match=f"pid {holder.pid}"):
            run_lock.hold(out)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    run_lock.hold(out).release()


def test_a_run_that_fails_to_start_frees_its_out(tiny_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(train_args(tiny_root, out, "--device", "cuda:99")) == 2
    run_lock.hold(out).release()  # not still held by this process
