"""rdfer.progress: a bar in a terminal, plain timed lines in a log (generation, cache fill, review)."""

from __future__ import annotations

from tqdm.auto import tqdm

from rdfer.progress import LogLines, progress_bar


def test_a_log_gets_a_line_per_interval(monkeypatch, capsys):
    monkeypatch.setenv("RDFER_LOG_SECONDS", "0")  # every update is past the interval
    bar = progress_bar(range(3), desc="frame cache: decoding", enabled=False)
    assert isinstance(bar, LogLines) and list(bar) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"frame cache: decoding: {k}/3" for k in (1, 2, 3)]
    with progress_bar(total=10, desc="SynthDFER quick", enabled=False) as counted:
        counted.update(4)
    assert capsys.readouterr().err.startswith("SynthDFER quick: 4/10 (")


def test_quiet_within_the_interval_and_a_bar_in_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("RDFER_LOG_SECONDS", "60")
    assert list(progress_bar(range(5), desc="x", enabled=False)) == list(range(5))
    assert capsys.readouterr().err == ""
    bar = progress_bar(range(2), desc="x", enabled=True, disable=True)
    assert isinstance(bar, tqdm)
