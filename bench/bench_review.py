"""Seconds to build the review page (python -m rdfer.review) for 500 suspects: the whole command, from last.pt
to the written HTML (selector state, split, frames from the frame cache, the network's key clips, strips).

    RDFER_REVIEW_RUN=runs/quick python -m pytest bench/bench_review.py --benchmark-only

RDFER_REVIEW_RUN is a finished run of the main job (python -m rdfer.train) whose frame cache is still there.
Its last.pt is copied with the 500 highest-scoring samples marked noisy (a run flags fewer), so the page holds
500 suspects; everything else is the run's own. Target: under 20 s on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rdfer.review.__main__ import main
from rdfer.robust.categories import NOISY

SUSPECTS = 500


@pytest.fixture(scope="module")
def run_500(tmp_path_factory) -> Path:
    source = os.environ.get("RDFER_REVIEW_RUN")
    if not source:
        pytest.skip("set RDFER_REVIEW_RUN to a finished run of python -m rdfer.train")
    state = torch.load(Path(source) / "last.pt", map_location="cpu", weights_only=True)
    selector = state["selector"]
    top = selector["score"].argsort(descending=True)[:SUSPECTS]
    selector["category"][top] = NOISY
    out = tmp_path_factory.mktemp("review") / "run"
    out.mkdir()
    torch.save(state, out / "last.pt")
    return out


def test_review_page_500_suspects(benchmark, run_500):
    page = run_500 / "review.html"
    benchmark.pedantic(
        lambda: main([str(run_500), "--out", str(page), "--no-progress"]), rounds=2, iterations=1
    )
    assert page.read_text().count('<tr class="sus"') == SUSPECTS
