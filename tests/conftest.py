"""Session-wide test settings.

Without a CUDA GPU the Triton kernels run under the Triton interpreter. Triton reads TRITON_INTERPRET when a
kernel is decorated (when rdfer.kernels.* is first imported), not when it launches, so the kernel modules are
imported here, with the variable set, before pytest imports any test module. The variable is then restored:
rdfer.ops reads it at each call, so the rest of the suite runs the twins (the interpreter would double the
model tests' time), and the kernel tests turn it on for themselves with the `interpret` fixture.
Tests marked `cuda` are skipped, not failed, without a GPU.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

if not HAS_CUDA:
    _before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import rdfer.kernels.agreement
        import rdfer.kernels.attention_gate  # noqa: F401
    except ImportError:  # no triton: the kernel tests skip themselves
        pass
    finally:
        if _before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _before


@pytest.fixture(scope="session", autouse=True)
def frame_cache(tmp_path_factory):
    """The frame cache (on by default) writes its stores in a session folder, never in ~/.cache/rdfer."""
    before = os.environ.get("RDFER_FRAME_CACHE")
    os.environ["RDFER_FRAME_CACHE"] = str(tmp_path_factory.mktemp("frame-cache"))
    yield
    if before is None:
        del os.environ["RDFER_FRAME_CACHE"]
    else:
        os.environ["RDFER_FRAME_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """SynthDFER `tiny` (42 train / 14 test clips, 30% symmetric noise), generated once per test session."""
    from rdfer.data.synth import generate

    return generate("tiny", tmp_path_factory.mktemp("synth") / "tiny", seed=0, noise=0.3, progress=False)


@pytest.fixture
def tiny_config(tiny_root):
    """A factory: a Config that trains a very small RDFER on `tiny` in seconds, writing to `out`."""
    from rdfer.config import load_config

    def make(out, *extra):
        return load_config(None, [
            "data.dataset=synthetic", f"data.root={tiny_root}", "data.num_frames=16", "data.image_size=32",
            "data.batch_size=8", "data.workers=0", "model.encoder=small", "model.feature_dim=16",
            "model.lstm_hidden=8", "model.lstm_layers=1", "model.heads=2", "model.synopsis_frames=8",
            "model.clip_length=2", "model.stride=2", "optim.epochs=3", "optim.lr=2e-3", "optim.warmup_epochs=1",
            "robust.warmup=0.34", f"run.out={out}", *extra])

    return make


class _Counting:
    """Stands in for a Triton kernel: `kernel[grid](...)` launches the real one, counts the launch and keeps
    its keyword arguments (constexprs and compile options); anything else (warmup) goes to the real kernel."""

    def __init__(self, kernel, key, counts):
        self.kernel, self.key, self.counts = kernel, key, counts

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.counts[self.key] += 1
            self.counts.options[self.key].append(kwargs)
            return self.kernel[grid](*args, **kwargs)

        return launch

    def __getattr__(self, name):
        return getattr(self.kernel, name)


class LaunchCounts(dict):
    """Launches per key (compares equal to a plain dict); `.options[key]` the keyword arguments of each."""

    def __init__(self, keys):
        super().__init__({key: 0 for key in keys})
        self.options = {key: [] for key in keys}


@pytest.fixture
def count_launches(monkeypatch):
    """count_launches({key: (module, kernel name)}) -> LaunchCounts: each kernel's launches, by key."""

    def wrap(kernels):
        counts = LaunchCounts(kernels)
        for key, (module, name) in kernels.items():
            monkeypatch.setattr(module, name, _Counting(getattr(module, name), key, counts))
        return counts

    return wrap


@pytest.fixture
def interpret(monkeypatch):
    """Lets rdfer.ops dispatch to the Triton kernels on CPU (under the interpreter) for one test."""
    if not HAS_CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


_COMPILE_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "compile_kernels.py"


@pytest.fixture
def compile_kernels():
    """Runs .ci/compile_kernels.py (every configuration of RDFER's own shapes, compiled ahead of time for a
    GPU architecture without a GPU, checked against its shared memory) with the given arguments, in a fresh
    process: the suite's process decorated the kernels for the interpreter, which accepts programs the GPU
    compiler rejects (tl.dot shapes, types). Returns the script's output; a failure fails the test."""

    def run(*args: str) -> str:
        pytest.importorskip("triton.compiler")
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        cmd = [sys.executable, str(_COMPILE_SCRIPT), "--rdfer-shapes", *args]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode:
            if "ImportError" in done.stderr and ("ASTSource" in done.stderr or "GPUTarget" in done.stderr):
                pytest.skip("this triton has no ahead-of-time compile API")
            output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            pytest.fail(f"compile_kernels.py {' '.join(args)} failed:\n{output}")
        return done.stdout

    return run


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)
