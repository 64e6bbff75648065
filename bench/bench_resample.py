"""Throughput of the key-expression gather (docs/method.md §2): the rdfer._C op, its twin, the field's code.

Ways to move the same K*L = 16 frames per video out of T = 64, timed in one run:
  copy    dst.copy_(src) of the output's size: the device's copy bandwidth, the ceiling for a gather
  bytes   a copy that moves as many bytes (read + written) as the op's useful bytes: op/bytes is the share of
          the device's copy bandwidth the op reaches
  clone   src.clone(): the same copy into fresh memory, as every op that returns a new tensor writes (on the
          CPU that memory comes from the OS page by page, which costs more than the copy itself)
  op      torch.ops.rdfer.gather_clips[_normalized|_augmented] (csrc/)
  twin    gather_clips_reference, or gather_clips_augmented_reference (gather, apply_augment per clip, then
          normalise: the CPU loader's augmentation moved after the gather)
  onehot  the field's formulation, torch.bmm(one_hot [B, KL, T], frames.view(B, T, -1).float())
GB/s counts the useful bytes (gathered frames read + output written), so the GB/s ratios are speed ratios.
The augmented case draws each clip's parameters with clip_augment_params (crop, flip, colour jitter) and
passes them on the device, so that its time is the kernel's.
The summary at the end (from each impl's fastest round) gives each case's op as a share of copy and bytes
and as a multiple of twin and onehot.

    python -m pytest bench/bench_resample.py --benchmark-only
GPU: B = 128, T = 64, 3x112x112. CPU: B = 8 (RDFER_BENCH_FULL=1 for B = 128).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from _timing import rounds, write_after_run

from rdfer.data.augment import clip_augment_params
from rdfer.ops import dispatch
from rdfer.ops.augment import params_to_tensor
from rdfer.ops.resample import gather_clips_augmented_reference, gather_clips_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH = 128 if DEVICE == "cuda" or os.environ.get("RDFER_BENCH_FULL") == "1" else 8
T, K, L, C, H, W = 64, 4, 4, 3, 112, 112
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Calls per timed round: one synchronisation per round keeps its cost out of a ~0.1 ms GPU gather.
INNER = 10 if DEVICE == "cuda" else 1

# case -> (frames dtype, out dtype of the normalised gather or None for the plain gather, augmented)
CASES = {
    "uint8": (torch.uint8, None, False),
    "float32": (torch.float32, None, False),
    "uint8->normalised float32": (torch.uint8, torch.float32, False),
    "uint8->augmented float32": (torch.uint8, torch.float32, True),
}
if DEVICE == "cuda":
    CASES["uint8->augmented bfloat16"] = (torch.uint8, torch.bfloat16, True)
IMPLS = ["copy", "bytes", "clone", "op", "twin", "onehot"]
OPS = {False: "rdfer::gather_clips", True: "rdfer::gather_clips_augmented"}
_SECONDS: dict[str, dict[str, float]] = {}  # case -> impl -> fastest round (seconds): robust on a shared host
_BYTES: dict[str, int] = {}


def _inputs(case: str):
    dtype = CASES[case][0]
    g = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        frames = torch.randint(0, 256, (BATCH, T, C, H, W), dtype=dtype, generator=g)
    else:
        frames = torch.rand(BATCH, T, C, H, W, generator=g, dtype=dtype)
    indices = torch.randint(0, T, (BATCH, K, L), generator=g)
    return frames.to(DEVICE), indices.to(DEVICE)


def _useful_bytes(case: str, indices: torch.Tensor) -> int:
    """One call's gathered frames read plus its output written (the same for every impl)."""
    dtype, out_dtype, _ = CASES[case]
    item = torch.empty((), dtype=dtype).element_size()
    out_item = torch.empty((), dtype=out_dtype or dtype).element_size()
    return indices.numel() * C * H * W * (item + out_item)


def _impl(case: str, impl: str, frames: torch.Tensor, indices: torch.Tensor) -> Callable[[], torch.Tensor]:
    _, out_dtype, augmented = CASES[case]
    mean = torch.tensor(MEAN, device=DEVICE)
    std = torch.tensor(STD, device=DEVICE)
    if impl == "bytes":
        src = torch.empty(_useful_bytes(case, indices) // 2, dtype=torch.uint8, device=DEVICE)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    if impl in ("copy", "clone"):
        src = gather_clips_reference(frames, indices, *((mean, std, out_dtype) if out_dtype else ()))
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)) if impl == "copy" else src.clone
    if augmented:
        return _augmented_impl(impl, frames, indices, mean, std, out_dtype)
    if impl == "op":
        if out_dtype is None:
            return lambda: torch.ops.rdfer.gather_clips(frames, indices)
        return lambda: torch.ops.rdfer.gather_clips_normalized(frames, indices, mean, std, out_dtype)
    if impl == "twin":
        if out_dtype is None:
            return lambda: gather_clips_reference(frames, indices)
        return lambda: gather_clips_reference(frames, indices, mean, std, out_dtype)
    onehot = torch.nn.functional.one_hot(indices.view(BATCH, K * L), T).float()  # [B, KL, T], built once

    def matmul() -> torch.Tensor:
        out = torch.bmm(onehot, frames.view(BATCH, T, -1).float()).view(BATCH, K, L, C, H, W)
        if out_dtype is None:
            return out
        x = (out / 255.0 - mean.view(1, 1, 1, C, 1, 1)) / std.view(1, 1, 1, C, 1, 1)
        return x.to(out_dtype).reshape(BATCH * K * L, C, H, W).contiguous(memory_format=torch.channels_last)

    return matmul


def _augmented_impl(impl, frames, indices, mean, std, out_dtype) -> Callable[[], torch.Tensor]:
    params = params_to_tensor([clip_augment_params(0, 0, i, H) for i in range(BATCH)]).to(DEVICE)
    if impl == "op":
        return lambda: torch.ops.rdfer.gather_clips_augmented(frames, indices, params, mean, std, out_dtype)
    if impl == "twin":
        return lambda: gather_clips_augmented_reference(frames, indices, params, mean, std, out_dtype)
    pytest.skip(f"{impl} has no augmented form")


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    if not _SECONDS:
        return
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines: list[str] = []
    _write_summary(lines.append, name)
    write_after_run(request, lines)


def _write_summary(write: Callable[[str], None], name: str) -> None:
    write(f"re-sampling gather, B={BATCH} T={T} K*L={K * L} {C}x{H}x{W} on {name} (GB/s, ratios)")
    write(
        "  op/bytes: the op's share of the device's copy bandwidth (augmented gather on a GPU: aim >= 0.70)"
    )
    for case, seconds in _SECONDS.items():
        gbps = {impl: _BYTES[case] / s / 1e9 for impl, s in seconds.items()}
        line = f"  {case:<26}" + "".join(f" {impl} {gbps[impl]:8.1f}" for impl in IMPLS if impl in gbps)
        if "op" in gbps:
            refs = [ref for ref in ("copy", "bytes", "clone", "twin", "onehot") if ref in gbps]
            line += "".join(f" | op/{ref} {gbps['op'] / gbps[ref]:6.2f}x" for ref in refs)
        write(line)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_gather_throughput(benchmark, case: str, impl: str) -> None:
    built = dispatch.extension() is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        OPS[CASES[case][2]], DEVICE.upper()
    )
    if impl == "op" and not built:
        pytest.skip(f"rdfer._C not built with {DEVICE} kernels (RDFER_SKIP_EXT=1?)")
    frames, indices = _inputs(case)
    fn = _impl(case, impl, frames, indices)
    fn()
    _BYTES[case] = INNER * _useful_bytes(case, indices)
    benchmark.group = case
    benchmark.pedantic(rounds(fn, INNER), rounds=20 if DEVICE == "cuda" else 10, warmup_rounds=2)
    if benchmark.stats is not None:
        fastest = benchmark.stats.stats.min
        benchmark.extra_info["GB/s"] = _BYTES[case] / fastest / 1e9
        _SECONDS.setdefault(case, {})[impl] = fastest
