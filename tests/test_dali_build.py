"""rdfer.data.dali_build: which DALI extra matches torch's CUDA, and the line that says when they differ (from
`python -m rdfer.data summary` and the DALI loader's first message)."""

from __future__ import annotations

import json

import pytest

from rdfer.data import dali_build
from rdfer.data.__main__ import main

CU12 = ("nvidia-dali-cuda120", "2.4.0", 12)
CU13 = ("nvidia-dali-cuda130", "2.4.0", 13)


@pytest.mark.parametrize(
    "cuda, extra",
    [(None, "dali-cu12"), (11, "dali-cu12"), (12, "dali-cu12"), (13, "dali-cu13"), (14, "dali-cu13")],
)
def test_extra_for_torch(cuda, extra):
    assert dali_build.extra_for_torch(cuda) == extra


def test_matching_builds_say_nothing():
    assert dali_build.mismatch([CU12], "12.8", "2.13.0") is None
    assert dali_build.mismatch([CU13], "13.0", "2.13.0") is None
    assert dali_build.mismatch([CU12], None, "2.13.0+cpu") is None  # DALI decodes on the CPU then
    assert dali_build.mismatch([], "13.0", "2.13.0") is None  # no DALI: the loader's own error says so


def test_mismatch_names_both_and_the_extra():
    line = dali_build.mismatch([CU12], "13.0", "2.13.0")
    assert line == (
        "DALI nvidia-dali-cuda120 2.4.0 is built for CUDA 12, torch 2.13.0 for CUDA 13.0: "
        "pip uninstall -y nvidia-dali-cuda120 && pip install 'rdfer[dali-cu13]'"
    )
    both = dali_build.mismatch([CU12, CU13], "13.0", "2.13.0")
    assert both.startswith(
        "several DALI builds are installed (nvidia-dali-cuda120 2.4.0, nvidia-dali-cuda130"
    )
    assert both.endswith(
        "pip uninstall -y nvidia-dali-cuda120 nvidia-dali-cuda130 && pip install 'rdfer[dali-cu13]'"
    )


def test_installed_dali_reads_the_wheel_name(monkeypatch):
    class Dist:
        def __init__(self, name, version):
            self.metadata, self.version = {"Name": name}, version

    dists = [Dist("nvidia_dali_cuda130", "2.4.0"), Dist("numpy", "2.4"), Dist("nvidia-dali-cuda120", "2.3.0")]
    monkeypatch.setattr(dali_build.importlib.metadata, "distributions", lambda: dists)
    assert dali_build.installed_dali() == [
        ("nvidia-dali-cuda120", "2.3.0", 12),
        ("nvidia-dali-cuda130", "2.4.0", 13),
    ]


def test_summary_says_the_mismatch_on_stderr(monkeypatch, capsys, datasets):
    monkeypatch.setattr(dali_build.torch.version, "cuda", "13.0")
    monkeypatch.setattr(dali_build, "installed_dali", lambda: [CU12])
    assert main(["summary", "--dataset", "dfew", "--root", str(datasets / "dfew")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["dataset"] == "dfew"  # stdout stays the JSON report
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("summary: DALI nvidia-dali-cuda120 2.4.0 is built for CUDA 12")
    )


def test_dali_loader_says_the_mismatch_once(monkeypatch, capsys, tmp_path):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed (pip install 'rdfer[dali-cu12]')")
    from rdfer.data import dali
    from rdfer.data.records import ClipRecord, Split

    monkeypatch.setattr(
        dali_build, "check", lambda: "DALI x is built for CUDA 12, torch y for CUDA 13.0: fix"
    )
    monkeypatch.setattr(dali, "_SAID", set())
    split = Split("t", "train", ("a", "b"), [ClipRecord(0, "c", tmp_path / "c", 0)])  # a frame folder
    for _ in range(2):
        dali.make_dali_loader(split, batch_size=1, train=False, num_frames=2, image_size=8, device="cpu")
    err = capsys.readouterr().err
    assert err.count("DALI loader: DALI x is built for CUDA 12, torch y for CUDA 13.0: fix") == 1
