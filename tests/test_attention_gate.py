"""The Triton attention gate (kernels/attention_gate.py) against its twin (rdfer.ops.attention_gate).

On CPU the kernels run under the Triton interpreter (tests/conftest.py), so shapes stay small here; the
`cuda` tests repeat the comparisons at the paper's shapes. Tolerance, flash-attention style: the kernel's
error against a float64 evaluation of the twin's formula must be at most twice the same-precision twin's
error, plus a small floor.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from rdfer.kernels import attention_gate as kernel_module

from rdfer.ops.attention_gate import attention_gate, attention_gate_reference, dual_attention_gate

pytestmark = pytest.mark.usefixtures("interpret")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("q", "k", "v", "x", "weight", "bias")
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 1e-3}


def make_inputs(b, l, h, d, dtype, device=DEVICE, seed=0, x_dtype=None):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, l, h, d, generator=g) for _ in range(3))
    x = torch.randn(b, l, h * d, generator=g)
    weight = 1 + 0.2 * torch.randn(h * d, generator=g)
    bias = 0.2 * torch.randn(h * d, generator=g)
    cast = [dtype] * 3 + [x_dtype or dtype, torch.float32, torch.float32]
    return [t.to(device=device, dtype=c).requires_grad_() for t, c in zip((q, k, v, x, weight, bias), cast)]


def gate_float64(q, k, v, x, weight, bias, eps=1e-5):
    """The twin's formula in float64 (the twin itself computes in float32 whatever its input dtype)."""
    b, l, h, d = q.shape
    attn = (torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(d)).softmax(-1)
    heads = torch.einsum("bhlm,bmhd->blhd", attn, v).reshape(b, l, h * d)
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


def check_against_twin(inputs, fn=None):
    fn = fn or kernel_module.AttentionGateFunction.apply
    dtype = inputs[0].dtype
    grad_out = torch.randn(inputs[3].shape, generator=torch.Generator().manual_seed(1)).to(inputs[3].device)
    out, grads = run(lambda *t: fn(*t, 1e-5), inputs, grad_out)
    twin_out, twin_grads = run(attention_gate_reference, inputs, grad_out)
    exact_out, exact_grads = run(gate_float64, [t.detach().double() for t in inputs], grad_out)
    assert out.dtype == twin_out.dtype and out.shape == twin_out.shape
    assert_flash_rule("out", out, twin_out, exact_out, FLOOR[dtype])
    for name, g, tg, eg in zip(NAMES, grads, twin_grads, exact_grads):
        assert g.dtype == tg.dtype and g.shape == tg.shape, name
        assert_flash_rule(f"d{name}", g, tg, eg, FLOOR[dtype] * max(1.0, eg.abs().max().item()))


@pytest.mark.parametrize(
    ("b", "l", "h", "d"),
    [
        (2, 16, 2, 32),  # the synopsis stream's length
        (1, 4, 3, 64),  # B=1, the detail stream's length
        (2, 5, 1, 128),  # odd L, the paper's head dim
        (3, 1, 2, 32),  # one instance
        (1, 7, 2, 24),  # a head dim that is not a power of two
    ],
)
def test_fp32_matches_twin(b, l, h, d):
    check_against_twin(make_inputs(b, l, h, d, torch.float32))


@pytest.mark.parametrize(("b", "l", "h", "d"), [(2, 16, 2, 64), (3, 4, 2, 32)])
def test_bf16_matches_twin_within_flash_rule(b, l, h, d):
    check_against_twin(make_inputs(b, l, h, d, torch.bfloat16))


def test_strided_qkv_views_and_mixed_x_dtype():
    """The model's q, k, v are unbind views of one [B, L, 3, H, d] projection, and x may keep float32."""
    b, l, h, d = 2, 16, 2, 32
    x, weight, bias = make_inputs(b, l, h, d, torch.float32)[3:]
    proj = torch.randn(b, l, 3 * h * d, device=DEVICE).to(torch.bfloat16)
    q, k, v = proj.view(b, l, 3, h, d).unbind(2)
    assert not q.is_contiguous()
    check_against_twin([q, k, v, x, weight, bias])


def test_dual_streams_in_one_launch_match_two_twin_calls(count_launches):
    syn = make_inputs(2, 16, 2, 32, torch.float32, seed=2)
    det = make_inputs(3, 4, 2, 32, torch.float32, seed=3)  # another batch size too: tiles are per item
    counts = count_launches({"fwd": (kernel_module, "_gate_fwd_kernel"),
                             "bwd": (kernel_module, "_gate_bwd_kernel")})
    out_syn, out_det = dual_attention_gate(syn, det)
    (out_syn.sum() + (out_det * out_det).sum()).backward()
    assert counts == {"fwd": 1, "bwd": 1}
    ref = [[t.detach().clone().requires_grad_() for t in stream] for stream in (syn, det)]
    ref_syn, ref_det = attention_gate_reference(*ref[0]), attention_gate_reference(*ref[1])
    (ref_syn.sum() + (ref_det * ref_det).sum()).backward()
    torch.testing.assert_close(out_syn, ref_syn, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_det, ref_det, rtol=1e-5, atol=1e-5)
    for stream, ref_stream in zip((syn, det), ref):
        for name, t, r in zip(NAMES, stream, ref_stream):
            torch.testing.assert_close(t.grad, r.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_dual_kernel_holds_the_flash_rule_per_stream():
    syn = make_inputs(1, 16, 2, 32, torch.bfloat16, seed=4)
    det = make_inputs(2, 4, 2, 32, torch.bfloat16, seed=5)
    fn = kernel_module.DualAttentionGateFunction.apply
    check_against_twin(syn, lambda *t: fn(*t[:6], *[s.detach() for s in det], t[6], 1e-5)[0])
    check_against_twin(det, lambda *t: fn(*[s.detach() for s in syn], *t[:6], 1e-5, t[6])[1])


def test_every_output_element_is_written(monkeypatch):
    """Poisoned output buffers: any element the kernels leave unwritten shows up as NaN."""

    def poisoned(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(kernel_module, "_empty", poisoned)
    inputs = make_inputs(2, 5, 2, 24, torch.float32, seed=6)  # padding in L and in d
    out, grads = run(
        lambda *t: kernel_module.AttentionGateFunction.apply(*t, 1e-5),
        inputs,
        torch.ones(2, 5, 48, device=DEVICE),
    )
    assert torch.isfinite(out).all()
    for name, g in zip(NAMES, grads):
        assert torch.isfinite(g).all(), name


def test_dispatch_picks_kernel_twin_and_reports_missing_fast_path(monkeypatch, count_launches):
    inputs = make_inputs(1, 4, 2, 16, torch.float32, seed=7)
    counts = count_launches({"fwd": (kernel_module, "_gate_fwd_kernel"),
                             "bwd": (kernel_module, "_gate_bwd_kernel")})
    attention_gate(*inputs)
    assert counts["fwd"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "reference")
    attention_gate(*inputs)
    assert counts["fwd"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "auto")
    half = [t.detach().half() for t in inputs]  # no float16 kernel: the twin serves it
    assert attention_gate(*half).dtype == torch.float16
    assert counts["fwd"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="attention gate kernel cannot run"):
        attention_gate(*half)
    if DEVICE == "cpu":  # plain CPU (no interpreter) is the twin's
        monkeypatch.setenv("RDFER_KERNELS", "auto")
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        attention_gate(*inputs)
        assert counts["fwd"] == 1


def test_bad_shapes_are_clear_errors():
    q, k, v, x, weight, bias = make_inputs(1, 4, 2, 16, torch.float32)
    with pytest.raises(ValueError, match=r"x must be \[B, L, H\*d\]"):
        kernel_module.AttentionGateFunction.apply(q, k, v, x[..., :-1], weight, bias, 1e-5)
    with pytest.raises(ValueError, match="share one shape"):
        kernel_module.AttentionGateFunction.apply(q, k[:, :3], v, x, weight, bias, 1e-5)
    syn = make_inputs(1, 4, 2, 16, torch.float32)
    det = make_inputs(1, 4, 4, 8, torch.float32)
    with pytest.raises(ValueError, match="share the head count"):
        kernel_module.DualAttentionGateFunction.apply(*syn, *det, 1e-5, 1e-5)


def test_kernels_compile_for_sm90_without_a_gpu(compile_for_gpu):
    """The interpreter accepts programs the GPU compiler rejects: compile for an H100 at the paper's head dim,
    bf16, both streams (fp32 differs only in the dot precision)."""
    tensors = {"q", "k", "v", "x", "out", "dout", "dq", "dk", "dv", "dx"}
    names = [f"{n}{i}" for i in "01" for n in tensors | {"w", "bias", "mean", "rstd", "dw", "dbias", "eps"}]
    signature = {
        n: "*bf16" if n[:-1] in tensors else "fp32" if n.startswith("eps") else "*fp32" for n in names
    }
    signature["sqrt_d"] = "fp32"
    constexprs = {
        "BLOCK_L": 16,
        "BLOCK_D": 128,
        "PRECISION0": "tf32",
        "PRECISION1": "tf32",
        "TWO_STREAMS": True,
        "EMULATE_RTNE": False,
    }
    compile_for_gpu(
        [
            {
                "module": "rdfer.kernels.attention_gate",
                "kernel": kernel,
                "signature": signature,
                "constexprs": constexprs,
                "warps": 8,
                "arch": 90,
            }
            for kernel in ("_gate_fwd_kernel", "_gate_bwd_kernel")
        ]
    )


# ------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("b", "l", "h", "d"),
    [
        (128, 16, 8, 128),
        (128, 4, 8, 128),
        (257, 16, 8, 64),
        (1, 4, 8, 32),
        (3, 16, 4, 128),
        (5, 7, 2, 24),
    ],
)
def test_cuda_matches_twin(b, l, h, d, dtype):
    check_against_twin(make_inputs(b, l, h, d, dtype, device="cuda"))


@pytest.mark.cuda
def test_cuda_dual_streams_at_the_papers_shape():
    syn = make_inputs(128, 16, 8, 128, torch.bfloat16, device="cuda", seed=8)
    det = make_inputs(128, 4, 8, 128, torch.bfloat16, device="cuda", seed=9)
    fn = kernel_module.DualAttentionGateFunction.apply
    check_against_twin(syn, lambda *t: fn(*t[:6], *[s.detach() for s in det], t[6], 1e-5)[0])
    check_against_twin(det, lambda *t: fn(*[s.detach() for s in syn], *t[:6], 1e-5, t[6])[1])
