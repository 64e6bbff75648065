"""torchrun with two CPU processes (gloo) on SynthDFER `tiny`."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from rdfer import checkpoint
from rdfer.evaluate import main as evaluate_main
from rdfer.train import train

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def torchrun(cfg, tmp_path, script=("-m", "rdfer.train"), timeout=240):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *script, "--config", str(path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


def test_two_processes_train_and_report_what_one_process_measures(tiny_config, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", "optim.epochs=1")
    run = torchrun(cfg, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    state = checkpoint.load(tmp_path / "run" / "last.pt")
    assert state["world"] == 2
    # 42 clips dealt to 2 ranks, 21 each, 5 steps of 4: 40 samples seen, and every rank's rows reached rank 0.
    assert int((state["selector"]["category"] >= 0).sum()) == 40
    assert evaluate_main(["--checkpoint", str(tmp_path / "run" / "last.pt"), "--no-progress"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["num_clips"] == 14
    assert (single["war"], single["uar"]) == (summary["last_epoch"]["war"], summary["last_epoch"]["uar"])


def test_a_rank_that_dies_ends_the_job_and_one_process_resumes_its_last_checkpoint(tiny_config, tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(textwrap.dedent("""
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
    """))
    cfg = tiny_config(tmp_path / "run")
    run = torchrun(cfg, tmp_path, script=(str(script),))
    assert run.returncode != 0 and "ChildFailedError" in run.stderr
    state = checkpoint.load(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["world"]) == (0, 2)  # epoch 1's checkpoint, whole
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = train(cfg, resume=tmp_path / "run" / "last.pt", progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert checkpoint.load(tmp_path / "run" / "last.pt")["world"] == 1
