"""torchrun with two CPU processes (gloo): what they report equals one process, and a rank that dies."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import rdfer.evaluation
from rdfer import checkpoint
from rdfer.evaluate import main as evaluate_main
from rdfer.train import train

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available"),
    pytest.mark.slow,
]

# Runs `python -m rdfer.train` in each process and records, per rank, what the run does not log: the clips
# and video logits of each evaluation, and the agreement memory at the end of each epoch.
RECORDER = """
import os, sys, torch
import rdfer.evaluation as evaluation
import rdfer.training as training
from rdfer.train import main
rank, out = os.environ["RANK"], os.environ["RECORD_TO"]
predict_loader, end_epoch = evaluation.predict_loader, training.end_epoch
def recording_predict_loader(*args, **kwargs):
    logits, labels, ids, skipped = predict_loader(*args, **kwargs)
    torch.save({"logits": logits, "ids": ids}, f"{out}/eval-rank{rank}.pt")
    return logits, labels, ids, skipped
def recording_end_epoch(run, row):
    torch.save(run.selector.state_dict(), f"{out}/memory-rank{rank}-epoch{run.epoch + 1}.pt")
    end_epoch(run, row)
evaluation.predict_loader, training.end_epoch = recording_predict_loader, recording_end_epoch
sys.exit(main(sys.argv[1:]))
"""


def torchrun(cfg, tmp_path, script, timeout=180, env=None) -> subprocess.CompletedProcess:
    """torchrun with 2 processes on `script`. A run past `timeout` fails the test once torchrun has been told
    to stop (SIGTERM: it ends its workers) or killed."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *script,
        "--config",
        str(path),
        "--no-progress",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env
    ) as job:
        try:
            out, err = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            job.terminate()
            try:
                err = job.communicate(timeout=60)[1][-3000:]
            except subprocess.TimeoutExpired:  # a worker holds the pipes: leave them
                job.kill()
                err = "(torchrun did not stop: killed)"
            pytest.fail(f"torchrun did not end within {timeout} s; its stderr ends:\n{err}")
    return subprocess.CompletedProcess(cmd, job.returncode, out, err)


def one_process_logits(ckpt: Path, monkeypatch, capsys) -> tuple[dict, torch.Tensor]:
    """`python -m rdfer.evaluate` on the checkpoint in this process: its JSON and its video logits by clip."""
    seen = {}
    real = rdfer.evaluation.predict_loader

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        seen["logits"], seen["ids"] = result[0], result[2]
        return result

    monkeypatch.setattr(rdfer.evaluation, "predict_loader", recording)
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(ckpt), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    logits = torch.empty_like(seen["logits"])
    logits[seen["ids"]] = seen["logits"]
    return result, logits


def test_two_processes_train_and_report_what_one_process_measures(
    colour_config, tmp_path, monkeypatch, capsys
):
    # 15 test clips (odd): rank 0 evaluates 8, rank 1 evaluates 7, so padding would show. The model predicts
    # several classes, so rank 1 evaluating with its own BatchNorm statistics or weights would show too.
    (tmp_path / "recorder.py").write_text(RECORDER)
    records = tmp_path / "records"
    records.mkdir()
    cfg = colour_config(tmp_path / "run")
    run = torchrun(cfg, tmp_path, (str(tmp_path / "recorder.py"),), env={"RECORD_TO": str(records)})
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    state = checkpoint.load(tmp_path / "run" / "last.pt")
    assert state["world"] == 2

    single, logits = one_process_logits(tmp_path / "run" / "last.pt", monkeypatch, capsys)
    assert single["num_clips"] == 15
    predicted = logits.argmax(-1)
    assert len(set(predicted.tolist())) >= 3, f"a degenerate model predicts {predicted.tolist()}"
    assert (single["war"], single["uar"]) == (summary["last_epoch"]["war"], summary["last_epoch"]["uar"])

    # Each rank evaluated its clips, every clip once, with the checkpoint's weights and BatchNorm statistics.
    ranks = [torch.load(records / f"eval-rank{r}.pt") for r in (0, 1)]
    assert [r["ids"].tolist() for r in ranks] == [list(range(0, 15, 2)), list(range(1, 15, 2))]
    for r, rank in enumerate(ranks):
        torch.testing.assert_close(
            rank["logits"],
            logits[rank["ids"]],
            rtol=1e-4,
            atol=1e-4,
            msg=lambda m, r=r: f"rank {r}'s video logits are not the checkpoint's: {m}",
        )

    # Both ranks hold the same selector state after every epoch; epoch 1 saw 2 ranks x 5 steps x 4 clips.
    for epoch in (1, 2, 3, 4, 5):
        a, b = (torch.load(records / f"memory-rank{r}-epoch{epoch}.pt") for r in (0, 1))
        for key in ("elr_targets", "majority", "category", "weight"):
            assert torch.equal(a[key], b[key]), (epoch, key)
        assert torch.equal(a["stats"]["sums"], b["stats"]["sums"]), epoch
        if epoch == 1:
            assert int((a["category"] >= 0).sum()) == 40
    assert torch.equal(state["selector"]["elr_targets"], a["elr_targets"])


def test_a_rank_that_dies_ends_the_job_and_one_process_resumes_its_last_checkpoint(tiny_config, tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(
        textwrap.dedent("""
        import os, signal, sys
        import rdfer.training as t
        from rdfer.train import main
        real, calls = t.rdfer_loss, [0]
        def loss(*args, **kwargs):
            calls[0] += 1
            if os.environ["RANK"] == "1" and calls[0] == 8:  # step 3 of epoch 2
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        t.rdfer_loss = loss
        sys.exit(main(sys.argv[1:]))
    """)
    )
    cfg = tiny_config(tmp_path / "run")
    run = torchrun(cfg, tmp_path, (str(script),))
    assert run.returncode != 0 and "ChildFailedError" in run.stderr
    state = checkpoint.load(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["world"]) == (0, 2)  # epoch 1's checkpoint, whole
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = train(cfg, resume=tmp_path / "run" / "last.pt", progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert checkpoint.load(tmp_path / "run" / "last.pt")["world"] == 1
