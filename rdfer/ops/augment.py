"""The arithmetic of the training augmentation (docs/method.md §1): what one clip's parameters do to its
pixels (`apply_augment`, the reference the DALI pipeline and the augmented gather of rdfer.ops.resample
reproduce) and the one tensor encoding of the parameters (`params_to_tensor` / `params_from_tensor`).
Drawing the parameters is the data side's: rdfer.data.augment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale uses them.
_GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentParams:
    """One clip's augmentation. The crop box is in pixels of the size x size frame."""

    y0: int
    x0: int
    h: int
    w: int
    flip: bool
    brightness: float
    contrast: float
    saturation: float

    @classmethod
    def identity(cls, size: int) -> AugmentParams:
        return cls(0, 0, size, size, False, 1.0, 1.0, 1.0)


PARAM_COLUMNS = ("y0", "x0", "h", "w", "flip", "brightness", "contrast", "saturation")


def params_to_tensor(params: AugmentParams | Sequence[AugmentParams]) -> torch.Tensor:
    """One clip's parameters, or a batch's, as float32 [B, 8] rows in PARAM_COLUMNS order (flip as 0/1).

    The colour factors are stored as float32, the precision apply_augment computes in; only its 1 - factor
    may then round differently, so augmenting with params_from_tensor(params_to_tensor(p)) instead of p moves
    a few pixels in a million by one uint8 level.
    """
    if isinstance(params, AugmentParams):
        params = [params]
    rows = [[p.y0, p.x0, p.h, p.w, float(p.flip), p.brightness, p.contrast, p.saturation] for p in params]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(PARAM_COLUMNS))


def params_from_tensor(params: torch.Tensor) -> list[AugmentParams]:
    """The AugmentParams of each row of a [B, 8] params_to_tensor tensor (read as float32)."""
    if params.dim() != 2 or params.shape[1] != len(PARAM_COLUMNS):
        raise ValueError(f"params must be [B, 8] rows {PARAM_COLUMNS}, got shape {tuple(params.shape)}")
    decoded = []
    for i, row in enumerate(params.detach().to("cpu", torch.float32).tolist()):
        y0, x0, h, w, flip, brightness, contrast, saturation = row
        if not all(math.isfinite(v) and v == int(v) for v in (y0, x0, h, w)):
            raise ValueError(f"params[{i}] crop box (y0, x0, h, w) = {(y0, x0, h, w)} must be whole pixels")
        if flip not in (0.0, 1.0):
            raise ValueError(f"params[{i}] flip must be 0 or 1, got {flip}")
        if not all(math.isfinite(v) and v >= 0 for v in (brightness, contrast, saturation)):
            raise ValueError(
                f"params[{i}] colour factors (brightness, contrast, saturation) must be finite and "
                f">= 0, got {(brightness, contrast, saturation)}"
            )
        decoded.append(
            AugmentParams(int(y0), int(x0), int(h), int(w), flip == 1.0, brightness, contrast, saturation)
        )
    return decoded


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma [T, 1, H, W] of float RGB frames [T, 3, H, W]."""
    wr, wg, wb = _GREY_WEIGHTS
    return (x[:, 0:1] * wr).add_(x[:, 1:2], alpha=wg).add_(x[:, 2:3], alpha=wb)


# Frames per step of apply_augment: a chunk's float copies stay in cache between the steps (~25% faster
# than the whole clip at once); every step is per frame, so the chunking does not change the result.
_CHUNK = 8


def apply_augment(frames: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Augment uint8 frames [T, 3, H, W] of one clip with `p`; returns uint8 [T, 3, H, W].

    In float32: crop, bilinear resize back to H x W (align_corners=False, no antialias), horizontal flip,
    brightness x*b, contrast c*x + (1-c)*mean(grey of the frame), saturation s*x + (1-s)*grey(pixel). Like
    torchvision, each colour step clamps to [0, 255]; the result is rounded (half to even) once at the end.
    """
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected uint8 frames [T, 3, H, W], got {tuple(frames.shape)} {frames.dtype}")
    H, W = frames.shape[-2:]
    if not (0 <= p.y0 and 0 <= p.x0 and 0 < p.h and 0 < p.w and p.y0 + p.h <= H and p.x0 + p.w <= W):
        raise ValueError(f"crop box {p} does not fit in {H}x{W} frames")
    crop = frames[:, :, p.y0 : p.y0 + p.h, p.x0 : p.x0 + p.w]
    out = torch.empty(frames.shape, dtype=torch.uint8, device=frames.device)
    for t in range(0, frames.shape[0], _CHUNK):
        out[t : t + _CHUNK] = _augment_crop(crop[t : t + _CHUNK], p, H, W)
    return out


def _augment_crop(crop: torch.Tensor, p: AugmentParams, H: int, W: int) -> torch.Tensor:
    """apply_augment after the crop, for uint8 crops [t, 3, h, w]: float32 [t, 3, H, W], rounded, not cast."""
    T = crop.shape[0]
    # A contiguous float copy: interpolate is several times slower on the channels-last strides of a clip
    # permuted from [T, H, W, 3]; it is also fresh memory, so the steps below may work in place.
    x = crop.to(torch.float32, memory_format=torch.contiguous_format)
    if (p.h, p.w) != (H, W):
        # As one image of T*3 planes: several times faster than [T, 3, h, w], and, unlike that layout, the
        # result does not depend on torch's thread count (workers run 1 thread, the main process more).
        x = F.interpolate(
            x.view(1, T * 3, p.h, p.w), size=(H, W), mode="bilinear", align_corners=False, antialias=False
        ).view(T, 3, H, W)
    if p.flip:
        x = x.flip(-1)
    # Factors of exactly 1 are identities and are skipped.
    if p.brightness != 1.0:
        x.mul_(p.brightness).clamp_(0.0, 255.0)
    if p.contrast != 1.0:
        # The frame's mean grey level, from its channel means (the mean of a weighted sum).
        mean = _grey(x.mean(dim=(2, 3), keepdim=True))
        x.mul_(p.contrast).add_(mean * (1.0 - p.contrast)).clamp_(0.0, 255.0)
    if p.saturation != 1.0:
        grey = _grey(x)
        x.mul_(p.saturation).add_(grey, alpha=1.0 - p.saturation).clamp_(0.0, 255.0)
    # Copying into the uint8 output truncates; the values are already whole numbers in [0, 255].
    return x.round_().clamp_(0.0, 255.0)
