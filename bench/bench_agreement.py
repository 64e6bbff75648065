"""Time of a batch's cross-clip agreement statistics: the one-launch Triton kernel (through the op, under
RDFER_KERNELS=fast) against its twin, eager and under torch.compile, in one run. K = 4 clips, C = 7 classes;
B = 128, 1024 and 4096.

GB/s counts the bytes the op must move: the logits, labels and ids read, the memory rows read, the outputs
(with the new memory rows) written. Target on an H100: kernel >= 10x eager at B = 4096
(RDFER_BENCH_ENFORCE=1 asserts it).

    python -m pytest bench/bench_agreement.py --benchmark-only
On CPU the kernel runs under the Triton interpreter (a smoke test: its timings say nothing about the kernel).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before rdfer.kernels is imported (it decorates then)

from _timing import kernel_summary, rounds, write_after_run  # noqa: E402

from rdfer.ops import dispatch  # noqa: E402
from rdfer.ops.agreement import AgreementParams, agreement, agreement_reference  # noqa: E402

GPU = DEVICE == "cuda"
K, C = 4, 7
BATCHES = [128, 1024, 4096] if GPU else [257]
IMPLS = ["kernel", "eager", "compile"]
INNER = 10 if GPU else 1
PARAMS = AgreementParams(noisy_weight=0.1, relabel=True)
_SECONDS: dict[int, dict[str, float]] = {}
_BYTES: dict[int, int] = {}
_compiled = None


def _inputs(batch: int):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(batch, K, C, generator=g)
    labels = torch.randint(0, C, (batch,), generator=g)
    ids = torch.randperm(4 * batch, generator=g)[:batch]
    memory = torch.rand(4 * batch, 2, generator=g)
    return [t.to(DEVICE) for t in (logits, labels, ids, memory)]


def _impl(impl: str, inputs) -> Callable[[], object]:
    global _compiled
    if impl == "kernel":
        fn = agreement
    elif impl == "eager":
        fn = agreement_reference
    else:
        if _compiled is None:
            torch._dynamo.config.cache_size_limit = 64  # one static graph per case, never eager
            _compiled = torch.compile(agreement_reference, dynamic=False)
        fn = _compiled
    return lambda: fn(*inputs, PARAMS, True)


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    write_after_run(request, kernel_summary(f"agreement, K={K} C={C}", _SECONDS, _BYTES, INNER, ms=False))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", BATCHES)
def test_agreement_time(benchmark, monkeypatch, batch: int, impl: str) -> None:
    if impl == "kernel" and not dispatch.triton_usable(torch.device(DEVICE)):
        pytest.skip("no Triton for this device")
    monkeypatch.setenv("RDFER_KERNELS", "fast")  # the kernel or an error, never the twin
    inputs = _inputs(batch)
    fn = _impl(impl, inputs)
    fn()  # compile costs stay out of the rounds
    # logits + labels + ids read, memory rows read, new rows written, 4 float32 + 3 int64 outputs written
    _BYTES[batch] = INNER * batch * (K * C * 4 + 8 + 8 + 8 + 8 + 4 * 4 + 3 * 8)
    benchmark.group = f"B={batch}"
    benchmark.pedantic(rounds(fn, INNER), rounds=50 if GPU else 3, warmup_rounds=5 if GPU else 0)
    if benchmark.stats is None:
        return
    fastest = benchmark.stats.stats.min
    benchmark.extra_info["GB/s"] = _BYTES[batch] / fastest / 1e9
    benchmark.extra_info["us per call"] = fastest / INNER * 1e6
    seconds = _SECONDS.setdefault(batch, {})
    seconds[impl] = fastest
    if (
        os.environ.get("RDFER_BENCH_ENFORCE") == "1"
        and GPU
        and batch == 4096
        and {"kernel", "eager"} <= set(seconds)
    ):
        assert seconds["eager"] / seconds["kernel"] >= 10, f"B={batch}: kernel < 10x eager"
