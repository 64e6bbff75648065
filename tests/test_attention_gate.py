"""The Triton attention gate (kernels/attention_gate.py) against its twin (rdfer.ops.attention_gate).

One body per device (tests/conftest.py, KERNEL_DEVICES). On CPU the kernels run under the Triton interpreter,
so shapes stay small there; the `cuda` cases add the paper's shapes. Every comparison goes through the op
under RDFER_KERNELS=fast and counts the launches, so a dispatch change cannot turn it into twin against twin.
Tolerance, flash-attention style: the kernel's error against a float64 evaluation of the twin's formula must
be at most twice the same-precision twin's error, plus a small floor.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import KERNEL_DEVICES, per_device

triton = pytest.importorskip("triton")

from rdfer.kernels import _launch  # noqa: E402
from rdfer.kernels import attention_gate as kernel_module  # noqa: E402
from rdfer.kernels.attention_gate import GATE_DTYPES, GATE_MAX_HEAD_DIM, GATE_MAX_INSTANCES  # noqa: E402
from rdfer.ops.attention_gate import attention_gate, attention_gate_reference  # noqa: E402

pytestmark = pytest.mark.usefixtures("interpret")
NAMES = ("q", "k", "v", "x", "weight", "bias")
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 1e-3}
KERNELS = {"fwd": (kernel_module, "_gate_fwd_kernel"), "bwd": (kernel_module, "_gate_bwd_kernel")}


def make_inputs(b, n, h, d, dtype, device="cpu", seed=0, x_dtype=None):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, n, h, d, generator=g) for _ in range(3))
    x = torch.randn(b, n, h * d, generator=g)
    weight = 1 + 0.2 * torch.randn(h * d, generator=g)
    bias = 0.2 * torch.randn(h * d, generator=g)
    cast = [dtype] * 3 + [x_dtype or dtype, torch.float32, torch.float32]
    return [
        t.to(device=device, dtype=c).requires_grad_()
        for t, c in zip((q, k, v, x, weight, bias), cast, strict=True)
    ]


def gate_float64(q, k, v, x, weight, bias, eps=1e-5):
    """The twin's formula in float64 (the twin itself computes in float32 whatever its input dtype)."""
    b, n, h, d = q.shape
    attn = (torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(d)).softmax(-1)
    heads = torch.einsum("bhlm,bmhd->blhd", attn, v).reshape(b, n, h * d)
    return x * torch.sigmoid(F.layer_norm(heads, (h * d,), weight, bias, eps))


def run(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), [t.grad for t in leaves]


def assert_flash_rule(name, got, twin, exact, floor):
    err = (got.double() - exact).abs().max().item()
    base = (twin.double() - exact).abs().max().item()
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    assert err <= 2 * base + floor, f"{name}: kernel error {err:.3g} > 2 x twin error {base:.3g} + {floor:g}"


def check_against_twin(inputs, monkeypatch, count_launches):
    """The op under RDFER_KERNELS=fast (one launch each way) against the twin and a float64 evaluation."""
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    counts = count_launches(KERNELS)
    dtype = inputs[0].dtype
    grad_out = torch.randn(inputs[3].shape, generator=torch.Generator().manual_seed(1)).to(inputs[3].device)
    out, grads = run(attention_gate, inputs, grad_out)
    assert counts == {"fwd": 1, "bwd": 1}
    twin_out, twin_grads = run(attention_gate_reference, inputs, grad_out)
    exact_out, exact_grads = run(gate_float64, [t.detach().double() for t in inputs], grad_out)
    assert out.dtype == twin_out.dtype and out.shape == twin_out.shape
    assert_flash_rule("out", out, twin_out, exact_out, FLOOR[dtype])
    for name, g, tg, eg in zip(NAMES, grads, twin_grads, exact_grads, strict=True):
        assert g.dtype == tg.dtype and g.shape == tg.shape, name
        assert_flash_rule(f"d{name}", g, tg, eg, FLOOR[dtype] * max(1.0, eg.abs().max().item()))


FP32_SHAPES = [
    (2, 16, 2, 32),  # the synopsis stream's length
    (1, 4, 3, 64),  # B=1, the detail stream's length
    (2, 5, 1, 128),  # odd L, one head, the paper's head dim
    (3, 1, 2, 32),  # one instance
    (1, 7, 2, 24),  # a head dim that is not a power of two
    (1, 33, 2, 16),  # past one 32-row tile
]
BF16_SHAPES = [(2, 16, 2, 64), (3, 4, 2, 32), (1, 3, 2, 20)]
# The paper's shapes (B = 128 and more, 8 heads of 128): too many programs for the interpreter in CI time.
PAPER_SHAPES = [
    (128, 16, 8, 128),
    (128, 4, 8, 128),
    (257, 16, 8, 64),
    (1, 4, 8, 32),
    (3, 16, 4, 128),
    (5, 7, 2, 24),
]


@pytest.mark.parametrize(
    ("device", "b", "n", "h", "d"),
    per_device({"cpu": FP32_SHAPES, "cuda": FP32_SHAPES + PAPER_SHAPES}, KERNEL_DEVICES),
)
def test_fp32_matches_twin(device, b, n, h, d, monkeypatch, count_launches):
    check_against_twin(make_inputs(b, n, h, d, torch.float32, device), monkeypatch, count_launches)


@pytest.mark.parametrize(
    ("device", "b", "n", "h", "d"),
    per_device({"cpu": BF16_SHAPES, "cuda": BF16_SHAPES + PAPER_SHAPES}, KERNEL_DEVICES),
)
def test_bf16_matches_twin_within_flash_rule(device, b, n, h, d, monkeypatch, count_launches):
    check_against_twin(make_inputs(b, n, h, d, torch.bfloat16, device), monkeypatch, count_launches)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_strided_qkv_views_and_mixed_x_dtype(device, monkeypatch, count_launches):
    """The model's q, k, v are unbind views of one [B, L, 3, H, d] projection, and x may keep float32."""
    b, n, h, d = 2, 16, 2, 32
    x, weight, bias = make_inputs(b, n, h, d, torch.float32, device)[3:]
    proj = torch.randn(b, n, 3 * h * d, device=device).to(torch.bfloat16)
    q, k, v = proj.view(b, n, 3, h, d).unbind(2)
    assert not q.is_contiguous()
    check_against_twin([q, k, v, x, weight, bias], monkeypatch, count_launches)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_bf16_x_with_fp32_qkv_and_a_half_precision_layer_norm(device, monkeypatch, count_launches):
    inputs = make_inputs(2, 4, 2, 16, torch.float32, device, x_dtype=torch.bfloat16, seed=3)
    check_against_twin(inputs, monkeypatch, count_launches)
    leaves = [t.detach().requires_grad_() for t in inputs[:4]]
    weight, bias = (t.detach().bfloat16().requires_grad_() for t in inputs[4:])
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    attention_gate(*leaves, weight, bias).sum().backward()
    assert weight.grad.dtype == bias.grad.dtype == torch.bfloat16  # gradients in the parameters' dtype


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_every_output_element_is_written(device, monkeypatch):
    """Poisoned output buffers: any element the kernels leave unwritten shows up as NaN."""

    def poisoned(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(_launch, "empty", poisoned)
    inputs = make_inputs(2, 5, 2, 24, torch.float32, device, seed=6)  # padding in L and in d
    out, grads = run(
        lambda *t: kernel_module.AttentionGateFunction.apply(*t, 1e-5),
        inputs,
        torch.ones(2, 5, 48, device=device),
    )
    assert torch.isfinite(out).all()
    for name, g in zip(NAMES, grads, strict=True):
        assert torch.isfinite(g).all(), name


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_dispatch_picks_kernel_twin_and_reports_missing_fast_path(device, monkeypatch, count_launches):
    inputs = make_inputs(1, 4, 2, 16, torch.float32, device, seed=7)
    counts = count_launches(KERNELS)
    attention_gate(*inputs)
    assert counts["fwd"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "reference")
    attention_gate(*inputs)
    assert counts["fwd"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "auto")
    half = [t.detach().half() for t in inputs]  # no float16 kernel: the twin serves it
    assert attention_gate(*half).dtype == torch.float16
    # more instances than a program holds
    long = make_inputs(1, GATE_MAX_INSTANCES + 1, 1, 16, torch.float32, device)
    assert attention_gate(*long).shape == (1, GATE_MAX_INSTANCES + 1, 16)
    assert counts["fwd"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="attention gate kernel cannot run.*float32 or bfloat16"):
        attention_gate(*half)
    with pytest.raises(RuntimeError, match=f"1..{GATE_MAX_INSTANCES} instances"):
        attention_gate(*long)
    if device == "cpu":  # plain CPU (no interpreter) is the twin's
        monkeypatch.setenv("RDFER_KERNELS", "auto")
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        attention_gate(*inputs)
        assert counts["fwd"] == 1


@pytest.fixture
def shared_memory(monkeypatch):
    """Pretends the device allows `limit` bytes per block and each launch needs need[(name, stages)]."""

    def pretend(limit: int, need: dict[tuple[str, int], int]) -> None:
        monkeypatch.setattr(_launch, "_FITS", {})
        monkeypatch.setattr(_launch, "shared_memory_limit", lambda device: limit)
        monkeypatch.setattr(
            _launch, "shared_memory_needed", lambda job, device: need[job.name, job.num_stages]
        )

    return pretend


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_shared_memory_picks_the_pipelining_that_fits_or_the_twin(
    device, monkeypatch, count_launches, shared_memory
):
    inputs = make_inputs(1, 4, 2, 16, torch.float32, device, seed=8)
    counts = count_launches(KERNELS)
    # Both kernels fit without pipelining only: both launch with num_stages=1.
    shared_memory(
        100_000,
        {
            ("gate_fwd", 3): 90_000,
            ("gate_bwd", 3): 150_000,
            ("gate_fwd", 1): 40_000,
            ("gate_bwd", 1): 100_000,
        },
    )
    attention_gate(*inputs).sum().backward()
    assert counts == {"fwd": 1, "bwd": 1}
    assert [o["num_stages"] for o in counts.options["fwd"] + counts.options["bwd"]] == [1, 1]
    # The backward does not fit at all: the twin serves the call, and RDFER_KERNELS=fast names the bytes.
    shared_memory(
        100_000,
        {
            ("gate_fwd", 3): 90_000,
            ("gate_bwd", 3): 150_000,
            ("gate_fwd", 1): 40_000,
            ("gate_bwd", 1): 100_001,
        },
    )
    leaves = [t.detach().requires_grad_() for t in inputs]
    assert torch.equal(attention_gate(*leaves), attention_gate_reference(*leaves))
    assert counts == {"fwd": 1, "bwd": 1}
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="needs 100001 bytes of shared memory per block.* allows 100000"):
        attention_gate(*inputs)
    # Enough room: the default pipelining.
    shared_memory(200_000, {("gate_fwd", 3): 90_000, ("gate_bwd", 3): 150_000})
    attention_gate(*inputs)
    assert counts.options["fwd"][-1]["num_stages"] == _launch.STAGES[0]


def test_choose_stages_takes_the_deepest_that_fits():
    need = {3: 300, 1: 120}.__getitem__
    assert _launch.choose_stages(need, None) == (3, 0)  # no limit (the interpreter): nothing compiled
    assert _launch.choose_stages(need, 300) == (3, 300)
    assert _launch.choose_stages(need, 200) == (1, 120)
    assert _launch.choose_stages(need, 100) == (None, 120)


def test_launch_guard_is_the_tensors_device():
    guard = _launch.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(_launch.device_guard(torch.device("cpu")), torch.cuda.device)


def test_configurations_cover_the_launch_rule():
    configs = kernel_module.configurations()
    assert len(configs) == len(set(configs)) == 3 * 5 * len(GATE_DTYPES) ** 2  # BLOCK_L 16-64, BLOCK_D 16-256
    for length, d in ((16, 128), (4, 128), (GATE_MAX_INSTANCES, GATE_MAX_HEAD_DIM), (1, 1)):
        assert kernel_module.launch_config(length, d, torch.bfloat16, torch.float32) in configs


def test_bad_shapes_are_clear_errors():
    q, k, v, x, weight, bias = make_inputs(1, 4, 2, 16, torch.float32)
    with pytest.raises(ValueError, match=r"x must be \[B, L, H\*d\]"):
        kernel_module.AttentionGateFunction.apply(q, k, v, x[..., :-1], weight, bias, 1e-5)
    with pytest.raises(ValueError, match="share one shape"):
        kernel_module.AttentionGateFunction.apply(q, k[:, :3], v, x, weight, bias, 1e-5)


def test_kernels_compile_for_sm90_without_a_gpu(compile_kernels):
    """RDFER's configurations (bf16 and fp32, L = 16 and 4, d = 128) compiled for an H100 and within its
    shared memory: the interpreter accepts programs the GPU compiler rejects."""
    out = compile_kernels("--arch", "90", "--op", "attention_gate")
    assert "gate_bwd   qkv bf16 x bf16 BLOCK_L 16 BLOCK_D 128" in out
    assert "Nothing falls back" in out


# ------------------------------------------------------------------------------------------------ CUDA only
# What only a GPU can show: a second device, and offsets past 2^31 elements (30 GiB; the interpreter would
# need hours).


@pytest.mark.cuda
def test_cuda_launches_on_the_inputs_device(monkeypatch, count_launches):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    check_against_twin(
        make_inputs(3, 16, 8, 128, torch.bfloat16, device="cuda:1"), monkeypatch, count_launches
    )


@pytest.mark.cuda
def test_cuda_offsets_past_2_31_elements(monkeypatch):
    """x, out and the q, k, v projection hold more than 2^31 elements: the last items must still be right."""
    h, d, length = 8, 128, 16
    b = 2**31 // (length * h * d) + 2
    free = torch.cuda.mem_get_info()[0]
    if free < 30 * 2**30:
        pytest.skip("needs 30 GiB of free GPU memory")
    proj = torch.randn(b, length, 3, h, d, device="cuda", dtype=torch.bfloat16)
    q, k, v = proj.unbind(2)
    x = torch.randn(b, length, h * d, device="cuda", dtype=torch.bfloat16)
    weight, bias = torch.ones(h * d, device="cuda"), torch.zeros(h * d, device="cuda")
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with torch.no_grad():
        out = attention_gate(q, k, v, x, weight, bias)
        tail = slice(b - 2, b)
        want = attention_gate_reference(q[tail], k[tail], v[tail], x[tail], weight, bias)
    torch.testing.assert_close(out[tail], want, rtol=2e-2, atol=2e-2)
