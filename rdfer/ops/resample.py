"""Key-expression re-sampling (docs/method.md §2): key positions, clip frame indices, and the frame gather.

The twins below define the ops. Index arithmetic is float32 in a fixed order so the C++/CUDA op can reproduce
it bit for bit: a frame index is floor(center + (j - (L-1)/2) * stride + 0.5), clamped to [0, T-1].
The augmented gather applies each clip's training augmentation (rdfer.ops.augment) to the frames it gathers
only, so a clip costs the K*L frames the model reads instead of all T loaded ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rdfer.ops import dispatch
from rdfer.ops.augment import apply_augment, params_from_tensor


def key_positions_reference(probs: Tensor, k: int, num_frames: int) -> tuple[Tensor, Tensor]:
    """Peak positions of the top-k classes on the num_frames timeline.

    probs: [B, Ls, C] instance probabilities of the synopsis stream.
    For each class c: t_c = first argmax over instances of P[:, t, c], e_c = max. The k classes with the
    largest e_c (ties: lower class index first) give k positions, in that rank order: the centre of instance
    t_c's segment on the timeline, (t_c + 0.5) * T / Ls - 0.5.
    Returns positions [B, k] float32 and the peak classes [B, k] int64.
    """
    b, ls, c = probs.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}] (the number of classes), got {k}")
    peak_score, peak_instance = probs.float().max(dim=1)  # [B, C]; max(dim) returns the first maximum
    classes = torch.sort(peak_score, dim=1, descending=True, stable=True).indices[:, :k]
    instance = torch.gather(peak_instance, 1, classes).float()
    positions = (instance + 0.5) * (float(num_frames) / float(ls)) - 0.5
    return positions, classes


def clip_indices_reference(centers: Tensor, strides: Tensor, length: int, num_frames: int) -> Tensor:
    """Frame indices [B, K, L] of K clips of `length` frames around `centers` at `strides` (both [B, K])."""
    offsets = torch.arange(length, device=centers.device, dtype=torch.float32) - (length - 1) * 0.5
    pos = centers.float().unsqueeze(-1) + offsets * strides.float().unsqueeze(-1)
    return torch.floor(pos + 0.5).clamp_(0, num_frames - 1).long()


def gather_clips_reference(
    frames: Tensor,
    indices: Tensor,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """frames [B, T, C, H, W] gathered at indices [B, K, L] -> [B, K, L, C, H, W].

    With mean/std ([C], applied to x/255 for uint8 input, to x for float input) the result is normalised and
    converted to out_dtype (default float32), in channels-last memory order per frame, the layout the frame
    encoder wants. Float input is differentiable (the backward is a scatter-add over repeated indices).
    """
    b = frames.shape[0]
    batch = torch.arange(b, device=frames.device).view(b, 1, 1)
    out = frames[batch, indices]
    if mean is None:
        return out
    x = out.float()
    if frames.dtype == torch.uint8:
        x = x / 255.0
    shape = (1,) * 3 + (-1, 1, 1)
    x = (x - mean.float().view(shape)) / std.float().view(shape)
    x = x.to(out_dtype or torch.float32)
    k, length = indices.shape[1:]
    flat = x.reshape(b * k * length, *x.shape[3:]).contiguous(memory_format=torch.channels_last)
    return flat.view(b, k, length, *x.shape[3:])


def gather_clips_augmented_reference(
    frames: Tensor,
    indices: Tensor,
    params: Tensor,
    mean: Tensor,
    std: Tensor,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """uint8 frames [B, T, 3, H, W] gathered at indices [B, K, L], clip b augmented by params[b], normalised.

    params: [B, 8] float32 rows (y0, x0, h, w, flip, brightness, contrast, saturation), the encoding of
    rdfer.ops.augment.params_to_tensor. Defined as the gather, then apply_augment on each clip's K*L gathered
    frames, then gather_clips_reference's normalisation (same layout and out_dtype): every augmentation step
    works frame by frame with the clip's parameters, so augmenting the gathered frames equals augmenting the
    whole clip first and gathering after.
    """
    b, k, length = indices.shape
    gathered = gather_clips_reference(frames, indices).reshape(b, k * length, *frames.shape[2:])
    decoded = params_from_tensor(params)
    if len(decoded) != b:
        raise ValueError(f"params has {len(decoded)} rows for a batch of {b} clips")
    augmented = torch.stack([apply_augment(gathered[i], p) for i, p in enumerate(decoded)]) if b else gathered
    order = torch.arange(k * length, device=frames.device).view(1, k, length).expand(b, k, length)
    return gather_clips_reference(augmented, order, mean, std, out_dtype)


# --- fast path: torch.ops.rdfer.* from rdfer._C (csrc/), CPU and CUDA ---------------------------------------

_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


@torch.compiler.assume_constant_result  # torch.compile reads it once while tracing, as a constant
def _has_kernels(device_type: str, op: str) -> bool:
    key = _DISPATCH_KEYS.get(device_type)
    return (
        key is not None
        and dispatch.extension() is not None
        and torch._C._dispatch_has_kernel_for_dispatch_key(f"rdfer::{op}", key)
    )


def _fast(device: torch.device | str, op: str = "gather_clips") -> bool:
    """True where torch.ops.rdfer has kernels of `op` for `device` and RDFER_KERNELS does not ask for the
    twins."""
    m = dispatch.mode()
    if m == "reference":
        return False
    ok = _has_kernels(torch.device(device).type, op)
    if m == "fast" and not ok:
        raise RuntimeError(
            f"RDFER_KERNELS=fast but rdfer._C (the re-sampling extension) has no kernels for {device} "
            "(not built, built with RDFER_SKIP_EXT=1, or built without CUDA)"
        )
    return ok


def key_positions(probs: Tensor, k: int, num_frames: int) -> tuple[Tensor, Tensor]:
    """See key_positions_reference. The positions carry no gradient, as in the twin."""
    if not _fast(probs.device):
        return key_positions_reference(probs, k, num_frames)
    return torch.ops.rdfer.key_positions(probs.detach(), k, num_frames)


def clip_indices(centers: Tensor, strides: Tensor, length: int, num_frames: int) -> Tensor:
    """See clip_indices_reference; centers and strides broadcast against each other as in the twin."""
    if not _fast(centers.device):
        return clip_indices_reference(centers, strides, length, num_frames)
    centers, strides = torch.broadcast_tensors(centers.detach(), strides.detach())
    return torch.ops.rdfer.clip_indices(centers, strides, length, num_frames)


def gather_clips(
    frames: Tensor,
    indices: Tensor,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """See gather_clips_reference. The ops have no gradient (the model gathers uint8 frames), so frames, mean
    or std that require grad go to the twin, which is differentiable."""
    tensors = (frames, mean, std)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not _fast(frames.device) or needs_grad:
        return gather_clips_reference(frames, indices, mean, std, out_dtype)
    if mean is None:
        return torch.ops.rdfer.gather_clips(frames, indices)
    if std is None:
        raise ValueError("gather_clips: mean was given without std")
    return torch.ops.rdfer.gather_clips_normalized(frames, indices, mean, std, out_dtype or torch.float32)


def gather_clips_augmented(
    frames: Tensor,
    indices: Tensor,
    params: Tensor,
    mean: Tensor,
    std: Tensor,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """See gather_clips_augmented_reference. No gradient: the frames are uint8. params may stay on the CPU:
    the op checks them there and copies them to the frames' GPU without waiting for it."""
    if not _fast(frames.device, "gather_clips_augmented"):
        return gather_clips_augmented_reference(frames, indices, params, mean, std, out_dtype)
    return torch.ops.rdfer.gather_clips_augmented(
        frames, indices, params, mean, std, out_dtype or torch.float32
    )


def _normalized_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Strides of [B, K, L, C, H, W] whose frames are channels-last, as the C++ op allocates them."""
    b, k, length, c, h, w = shape
    frame = c * h * w
    return (k * length * frame, length * frame, frame, 1, w * c, c)


def _register_fakes() -> None:
    """Fake (meta) kernels, so the ops trace under torch.compile."""
    lib = "rdfer::"

    @torch.library.register_fake(lib + "key_positions")
    def _(probs, k, num_frames):
        return probs.new_empty((probs.shape[0], k), dtype=torch.float32), probs.new_empty(
            (probs.shape[0], k), dtype=torch.int64
        )

    @torch.library.register_fake(lib + "clip_indices")
    def _(centers, strides, length, num_frames):
        return centers.new_empty((*centers.shape, length), dtype=torch.int64)

    @torch.library.register_fake(lib + "gather_clips")
    def _(frames, indices):
        b, _, c, h, w = frames.shape
        return frames.new_empty((b, indices.shape[1], indices.shape[2], c, h, w))

    def normalized_like(frames, indices, out_dtype):
        b, _, c, h, w = frames.shape
        shape = (b, indices.shape[1], indices.shape[2], c, h, w)
        return frames.new_empty_strided(shape, _normalized_strides(shape), dtype=out_dtype)

    @torch.library.register_fake(lib + "gather_clips_normalized")
    def _(frames, indices, mean, std, out_dtype):
        return normalized_like(frames, indices, out_dtype)

    @torch.library.register_fake(lib + "gather_clips_augmented")
    def _(frames, indices, params, mean, std, out_dtype):
        return normalized_like(frames, indices, out_dtype)


if dispatch.extension() is not None:
    _register_fakes()
