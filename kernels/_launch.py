"""What the kernels of rdfer.kernels share on the host: the output allocator, the interpreter's bf16 rounding,
the launch under the tensors' own device, and the shared-memory check that picks a pipelining depth.

Shared memory. A configuration's need is only known once Triton has compiled it (software pipelining keeps
several loads in flight in shared memory, and layout conversions of the fp32 dot products go through it), so
the check compiles it without launching (JITFunction.warmup, the compiled kernel's `metadata.shared`) for the
device's own architecture and compares with the device's opt-in limit per block. The compile is the one the
launch would do anyway (Triton caches it), and the answer is cached per configuration and device. A
configuration that does not fit at the default depth tries no pipelining (about a third of the bytes), then
gives up: the op's dispatch takes its PyTorch twin, or raises under RDFER_KERNELS=fast.
.ci/compile_kernels.py runs the same decision for sm_80, sm_90 and sm_100 without a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl
from torch import Tensor

STAGES = (3, 1)  # software-pipelining depths to try, deepest (Triton's default on NVIDIA GPUs) first


@triton.jit
def round_to(x, dtype: tl.constexpr, EMULATE_RTNE: tl.constexpr):
    """fp32 x in dtype, rounded to nearest even. The Triton interpreter truncates fp32 -> bf16 casts, which
    would double the rounding error of every bf16 output; there the rounding is done on the bits (finite
    values). On the GPU the cast itself rounds to nearest even."""
    if EMULATE_RTNE and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


# Decided when the kernels were decorated (TRITON_INTERPRET when rdfer.kernels was imported), not at launch.
INTERPRETED = not isinstance(round_to, triton.runtime.JITFunction)


def dtype_name(dtype: torch.dtype) -> str:
    """fp32, bf16, fp16: for the configurations' names."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Every output buffer comes from here, so tests can poison them and prove each element is written."""
    return torch.empty(shape, dtype=dtype, device=device)


@dataclass(frozen=True)
class Launch:
    """One kernel launch, short of its grid. `args` are the positional arguments (tensors, or torch dtypes
    standing in for outputs not yet allocated when only compiling); `constexprs` the tl.constexpr ones."""

    name: str
    kernel: object
    args: tuple
    constexprs: dict
    num_warps: int
    num_stages: int
    options: dict = field(default_factory=dict)

    def compile_options(self) -> dict:
        return {"num_warps": self.num_warps, "num_stages": self.num_stages, **self.options}


def device_guard(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' (a cuda:1 tensor on cuda:1)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def launch(job: Launch, grid: tuple[int, ...], device: torch.device) -> None:
    with device_guard(device):
        job.kernel[grid](*job.args, **job.constexprs, **job.compile_options())


def shared_memory_limit(device: torch.device) -> int | None:
    """Bytes of shared memory one block may use on this device (opt-in); None where nothing is compiled."""
    if device.type != "cuda" or INTERPRETED:
        return None
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def shared_memory_needed(job: Launch, device: torch.device) -> int:
    """Bytes of shared memory `job` needs on `device`: compiled for it, not launched."""
    with device_guard(device):
        compiled = job.kernel.warmup(*job.args, grid=(1,), **job.constexprs, **job.compile_options())
    return int(compiled.metadata.shared)


def choose_stages(need: Callable[[int], int], limit: int | None) -> tuple[int | None, int]:
    """The deepest pipelining in STAGES whose need fits `limit` (None: no limit), and the last need seen.
    Returns (None, need) where even the shallowest does not fit. Shared with .ci/compile_kernels.py."""
    needed = 0
    for stages in STAGES:
        if limit is None:
            return stages, needed
        needed = need(stages)
        if needed <= limit:
            return stages, needed
    return None, needed


_FITS: dict[tuple, tuple[int | None, str]] = {}


def fitting_stages(
    key: tuple, device: torch.device, jobs: Callable[[int], list[Launch]]
) -> tuple[int | None, str]:
    """(num_stages, "") for the launches `jobs(stages)` of configuration `key` on `device`, or (None, why
    not). Cached per configuration and device; the first call compiles the launches that it checks."""
    cache_key = (key, device.type, device.index)
    if cache_key not in _FITS:
        limit = shared_memory_limit(device)
        stages, needed = choose_stages(
            lambda s: max(shared_memory_needed(job, device) for job in jobs(s)), limit
        )
        why = (
            ""
            if stages is not None
            else (
                f"it needs {needed} bytes of shared memory per block even without software pipelining, and "
                f"{device} allows {limit}"
            )
        )
        _FITS[cache_key] = (stages, why)
    return _FITS[cache_key]
