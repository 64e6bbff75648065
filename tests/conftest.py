"""Session-wide test settings.

Without a CUDA GPU the Triton kernels run under the Triton interpreter. Triton reads TRITON_INTERPRET when a
kernel is decorated (when rdfer.kernels.* is first imported), not when it launches, so the kernel modules are
imported here, with the variable set, before pytest imports any test module. The variable is then restored:
rdfer.ops reads it at each call, so the rest of the suite runs the twins (the interpreter would double the
model tests' time), and the kernel tests turn it on for themselves with the `interpret` fixture.
Tests marked `cuda` are skipped, not failed, without a GPU.
"""

import json
import os
import subprocess
import sys

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
    """Stands in for a Triton kernel: `kernel[grid](...)` launches the real one and counts the launch."""

    def __init__(self, kernel, key, counts):
        self.kernel, self.key, self.counts = kernel, key, counts

    def __getitem__(self, grid):
        self.counts[self.key] += 1
        return self.kernel[grid]


@pytest.fixture
def count_launches(monkeypatch):
    """count_launches({key: (module, kernel name)}) -> a dict of each kernel's launch count, by key."""

    def wrap(kernels):
        counts = {key: 0 for key in kernels}
        for key, (module, name) in kernels.items():
            monkeypatch.setattr(module, name, _Counting(getattr(module, name), key, counts))
        return counts

    return wrap


@pytest.fixture
def interpret(monkeypatch):
    """Lets rdfer.ops dispatch to the Triton kernels on CPU (under the interpreter) for one test."""
    if not HAS_CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


_AOT_SCRIPT = """
import importlib, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
for job in json.loads(sys.argv[1]):
    kernel = getattr(importlib.import_module(job["module"]), job["kernel"])
    sig = {n: "constexpr" if n in job["constexprs"] else job["signature"].get(n, "i32") for n in kernel.arg_names}
    src = ASTSource(fn=kernel, signature=sig, constexprs=job["constexprs"])
    compiled = triton.compile(src, target=GPUTarget("cuda", job["arch"], 32), options={"num_warps": job["warps"]})
    assert compiled.asm.get("cubin"), f"no cubin for {job['kernel']}"
"""


@pytest.fixture
def compile_for_gpu():
    """Compiles a Triton kernel ahead of time for a GPU architecture (sm_90 = H100) without a GPU, in a fresh
    process (the suite's process decorated triton's own jit functions for the interpreter). The interpreter
    accepts programs the GPU compiler rejects (tl.dot shapes, types); this catches them on a CPU machine.
    Each job: dict(module=, kernel=, signature=, constexprs=, warps=, arch=); signature maps argument names to
    Triton types ("*bf16", "fp32"; default "i32"). One process for all jobs (starting one costs seconds)."""

    def compile_kernels(jobs):
        pytest.importorskip("triton.compiler")
        env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
        run = subprocess.run(
            [sys.executable, "-c", _AOT_SCRIPT, json.dumps(jobs)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if run.returncode:
            if "ImportError" in run.stderr and ("ASTSource" in run.stderr or "GPUTarget" in run.stderr):
                pytest.skip("this triton has no ahead-of-time compile API")
            pytest.fail(f"a kernel did not compile for its GPU:\n{run.stderr[-4000:]}")

    return compile_kernels


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)
