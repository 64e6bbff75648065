"""Forward + backward time of the temporal attention gate: the Triton kernel (through the op, under
RDFER_KERNELS=fast) against its twin, eager and under torch.compile, in one run.

Cases: one stream, synopsis (L=16) or detail (L=4), as RDFER calls the op once per stream. D = H*d = 1024,
H = 8 (the paper's), B = 128 and 1024.
GB/s counts the bytes the op must move (fwd: q, k, v, x read, out written; bwd: q, k, v, x, dout read, dq, dk,
dv, dx written), so GB/s ratios are speed ratios. Targets on an H100 (bf16): kernel >= 2x eager and >= 1.2x
torch.compile; RDFER_BENCH_ENFORCE=1 turns them into assertions.

    python -m pytest bench/bench_attention_gate.py --benchmark-only
On CPU the kernel runs under the Triton interpreter and the shapes shrink to a smoke test: its timings say
nothing about the kernel.
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
from rdfer.ops.attention_gate import attention_gate, attention_gate_reference  # noqa: E402

GPU = DEVICE == "cuda"
HEADS, DIM = (8, 1024) if GPU else (2, 64)
LENGTHS = {"synopsis": 16, "detail": 4}
# (stream, batch, dtype)
CASES = (
    [(s, b, torch.bfloat16) for b in (128, 1024) for s in ("synopsis", "detail")]
    + [(s, 128, torch.float32) for s in ("synopsis", "detail")]
    if GPU
    else [("detail", 2, torch.bfloat16), ("synopsis", 2, torch.float32)]
)
IMPLS = ["kernel", "eager", "compile"]
INNER = 10 if GPU else 1  # calls per timed round: one synchronisation per round
TARGETS = {"eager": 2.0, "compile": 1.2}
_SECONDS: dict[str, dict[str, float]] = {}
_BYTES: dict[str, int] = {}


def _case_name(stream: str, batch: int, dtype: torch.dtype) -> str:
    return f"{stream} B={batch} {str(dtype).removeprefix('torch.')}"


def _stream(batch: int, length: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = DIM // HEADS
    q, k, v = (torch.randn(batch, length, HEADS, d, generator=g) for _ in range(3))
    x = torch.randn(batch, length, DIM, generator=g)
    weight, bias = 1 + 0.1 * torch.randn(DIM, generator=g), 0.1 * torch.randn(DIM, generator=g)
    cast = [dtype] * 4 + [torch.float32] * 2
    return [t.to(DEVICE, c).requires_grad_() for t, c in zip((q, k, v, x, weight, bias), cast, strict=True)]


_compiled = None


def _impl(impl: str, inputs: list[torch.Tensor]) -> Callable[[], None]:
    global _compiled
    grad = torch.randn(inputs[3].shape, device=DEVICE, dtype=inputs[3].dtype)
    if impl == "kernel":
        fn = attention_gate  # under RDFER_KERNELS=fast: the kernel or an error, never the twin
    elif impl == "eager":
        fn = attention_gate_reference
    else:
        if _compiled is None:
            torch._dynamo.config.cache_size_limit = 64  # one static graph per case, never eager
            _compiled = torch.compile(attention_gate_reference, dynamic=False)
        fn = _compiled

    def step() -> None:
        torch.autograd.grad(fn(*inputs), inputs, grad)

    return step


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    write_after_run(
        request,
        kernel_summary(f"attention gate fwd+bwd, D={DIM} H={HEADS}", _SECONDS, _BYTES, INNER, ms=True),
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("stream", "batch", "dtype"), CASES, ids=[_case_name(*c) for c in CASES])
def test_attention_gate_fwd_bwd(
    benchmark, monkeypatch, stream: str, batch: int, dtype: torch.dtype, impl: str
) -> None:
    if impl == "kernel" and not dispatch.triton_usable(torch.device(DEVICE)):
        pytest.skip("no Triton for this device")
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    inputs = _stream(batch, LENGTHS[stream], dtype, seed=0)
    step = _impl(impl, inputs)
    step()  # compile / autotune / first-call costs stay out of the rounds
    case = _case_name(stream, batch, dtype)
    _BYTES[case] = INNER * 14 * inputs[3].numel() * inputs[0].element_size()
    benchmark.group = case
    benchmark.pedantic(rounds(step, INNER), rounds=20 if GPU else 2, warmup_rounds=2 if GPU else 0)
    if benchmark.stats is None:
        return
    fastest = benchmark.stats.stats.min
    benchmark.extra_info["GB/s"] = _BYTES[case] / fastest / 1e9
    benchmark.extra_info["ms per call"] = fastest / INNER * 1e3
    seconds = _SECONDS.setdefault(case, {})
    seconds[impl] = fastest
    if (
        os.environ.get("RDFER_BENCH_ENFORCE") == "1"
        and GPU
        and dtype == torch.bfloat16
        and "kernel" in seconds
    ):
        for ref, target in TARGETS.items():
            if ref in seconds:
                assert seconds[ref] / seconds["kernel"] >= target, f"{case}: kernel < {target}x {ref}"
