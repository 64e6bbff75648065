"""python -m rdfer.review: the page of a run's suspects, checked as HTML text (every run) and as a real
headless Chromium renders it (Debian's `chromium`; CI installs it)."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdfer.data.synth.truth import load_ground_truth
from rdfer.review.__main__ import main
from rdfer.review.page import KEY_COLOUR, strip_png
from rdfer.review.suspects import CHANGING, OTHER, RIGHT, Suspect, suspects_of
from rdfer.robust.stats import SampleStats

ROW = re.compile(
    r'<tr class="sus" data-given="([^"]*)" data-seen="([^"]*)"><td>(\d+)</td><td>([^<]*)<br>.*?'
    r'<img class="strip" alt="[^"]*" src="data:image/jpeg;base64,([^"]*)">.*?<td>([\d.]+)</td>.*?</tr>'
)


@pytest.fixture(scope="module")
def run_dir(tiny_config, tmp_path_factory):
    from rdfer.training import train

    out = tmp_path_factory.mktemp("review") / "run"
    train(tiny_config(out, "optim.epochs=2"), progress=False)
    return out


def noisy_rows(run: Path) -> list[dict]:
    with open(run / "noisy_samples.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_page_holds_every_suspect_with_its_frames(run_dir, tiny_root, tmp_path, capsys):
    out = tmp_path / "review.html"
    assert main([str(run_dir), "--out", str(out)]) == 0
    assert f"-> {out}" in capsys.readouterr().err
    page = out.read_text()
    rows = ROW.findall(page)
    expected = noisy_rows(run_dir)
    assert expected and len(rows) == len(expected) == page.count('<tr class="sus"')
    want = {r["key"]: r for r in expected}
    assert sorted(r[3] for r in rows) == sorted(want)
    scores = [float(r[5]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # highest score first
    assert [int(r[2]) for r in rows] == list(range(1, len(rows) + 1))
    for given, seen, _, key, strip, score in rows:
        assert (given, seen) == (want[key]["given_label"], want[key]["network_class"])
        assert abs(float(score) - float(want[key]["noise_score"])) < 1e-3
        img = Image.open(io.BytesIO(base64.b64decode(strip)))
        assert img.format == "JPEG" and img.height == 32 and img.width % 32 == 0 and img.width >= 8 * 32
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    truth = {t.key: t for t in load_ground_truth(tiny_root) if t.split == "train"}
    kinds = re.findall(r"<td>(noisy|hard|clean)</td></tr>", page)
    assert kinds == [
        "noisy" if truth[k].is_noisy else "hard" if truth[k].is_hard else "clean"
        for k in (r[3] for r in rows)
    ]
    assert f"<b>{len(rows)} suspects</b>" in page and 'class="conf"' in page
    assert f"frames of {len(rows)} of {len(rows)} suspects from the frame cache" in page


def test_top_keeps_the_highest_scores(run_dir, tmp_path):
    out = tmp_path / "top.html"
    assert main([str(run_dir), "--top", "3", "--out", str(out), "--no-progress"]) == 0
    top = [float(r[5]) for r in ROW.findall(out.read_text())]
    every = sorted((float(r["noise_score"]) for r in noisy_rows(run_dir)), reverse=True)
    assert top == pytest.approx(every[:3], abs=1e-3)


def test_mistakes_are_one_line(run_dir, tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    weights_only = tmp_path / "best"
    weights_only.mkdir()
    shutil.copy(run_dir / "best.pt", weights_only / "last.pt")
    assert main([str(weights_only)]) == 1
    assert "holds no selector state" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(run_dir), "--top", "0"])
    assert e.value.code == 2


def test_a_changed_dataset_is_refused(run_dir, tmp_path, capsys, monkeypatch):
    from rdfer.data import prepare

    real = prepare.load_splits

    def fewer(data, progress=True):  # the dataset lost clips since the run
        train, test = real(data, progress)
        return dataclasses.replace(train, records=train.records[:-1]), test

    monkeypatch.setattr(prepare, "load_splits", fewer)
    assert main([str(run_dir), "--out", str(tmp_path / "x.html")]) == 1
    assert "do not fit the training split of its config" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize(
    "epochs, trend",
    [((2, 1, 1, 1), RIGHT), ((1, 3, 3, 3), OTHER), ((1, 1, 3, 1), CHANGING), ((-1, 3, -1, 3), OTHER)],
)
def test_trend_reads_the_late_epochs(epochs, trend):
    assert Suspect(0, given=1, seen=3, score=1.0, epochs=epochs).trend == trend


def test_suspects_are_the_noisy_category_by_score():
    class Fake:  # only the Selector interface: category, majority, scores(), stats
        category = torch.tensor([2, 0, 2, 2, 1])
        majority = torch.tensor([1, 0, 0, 2, 1])
        stats = SampleStats(5)

        def scores(self):
            return torch.tensor([0.5, 9.0, 0.7, 0.5, 3.0])

        def __len__(self):
            return 5

    probs = torch.tensor([[0.9, 0.1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0]])
    rows = torch.cat([torch.zeros(5, 4), probs], 1)
    for _ in range(2):
        Fake.stats.add(torch.arange(5), rows, torch.tensor([0, 0, 1, 2, 1]), torch.tensor(True))
        Fake.stats.close_epoch()
    found = suspects_of(Fake())
    assert [s.sample_id for s in found] == [2, 0, 3]  # score 0.7, then 0.5 by id
    assert found[0] == Suspect(2, given=1, seen=0, score=pytest.approx(0.7), epochs=(2, 2))
    assert [s.sample_id for s in suspects_of(Fake(), top=1)] == [2]


def test_strip_shows_synopsis_and_key_frames_in_time_order_key_ones_outlined():
    frames = np.zeros((8, 3, 16, 16), np.uint8)
    for t in range(8):
        frames[t] = t * 30
    img = np.asarray(strip_png(frames, np.array([1, 5]), np.array([[2, 3], [5, 6]])))
    assert img.shape == (16, 16 * 5, 3)  # frames 1, 2, 3, 5, 6
    centres = img[8, 8::16, 0].tolist()
    assert centres == [30, 60, 90, 150, 180]
    assert img[0, 0].tolist() == [30, 30, 30]  # frame 1: synopsis only, not outlined
    assert img[0, 16].tolist() == list(KEY_COLOUR) and img[0, 48].tolist() == list(KEY_COLOUR)


@pytest.mark.slow
def test_chromium_renders_every_row_and_frame_strip(run_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Debian's chromium (apt-get install -y chromium; .ci/run installs it)")
    out = tmp_path / "review.html"
    assert main([str(run_dir), "--out", str(out), "--no-progress"]) == 0
    n = len(noisy_rows(run_dir))
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([*args, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The page's load handler counts the strips the browser decoded (complete, naturalWidth > 0).
    assert f'data-bad="0" data-loaded="{n}">all {n} frame strips shown' in dom.stdout
    assert dom.stdout.count('<tr class="sus"') == n
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [*args, "--window-size=1200,800", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert (np.abs(pixels.astype(int) - KEY_COLOUR).sum(-1) < 30).sum() > 100  # key clip outlines are drawn
