"""Clip-consistent augmentation: parameter sampling and the pixel definition of each step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES, tolerance

from rdfer.data.augment import clip_augment_params, sample_augment, sample_crop
from rdfer.data.sampling import clip_rng
from rdfer.ops import dispatch, resample
from rdfer.ops.augment import AugmentParams, apply_augment, params_from_tensor, params_to_tensor
from rdfer.ops.resample import gather_clips_augmented_reference, gather_clips_reference


def _random_frames(T=5, H=16, W=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (T, 3, H, W), generator=g, dtype=torch.uint8)


def _params(**kw) -> AugmentParams:
    base = dict(y0=0, x0=0, h=16, w=16, flip=False, brightness=1.0, contrast=1.0, saturation=1.0)
    base.update(kw)
    return AugmentParams(**base)


def test_identity_params_give_identity():
    x = _random_frames()
    out = apply_augment(x, AugmentParams.identity(16))
    assert out.dtype == torch.uint8 and torch.equal(out, x)


def test_flip_is_exact():
    x = _random_frames()
    assert torch.equal(apply_augment(x, _params(flip=True)), x.flip(-1))


def test_same_params_same_result_for_every_frame():
    frame = _random_frames(T=1)
    clip = frame.expand(6, -1, -1, -1).contiguous()
    p = sample_augment(clip_rng(1, 2, 3), 16)
    out = apply_augment(clip, p)
    for t in range(6):
        assert torch.equal(out[t], out[0])
    # and each frame equals the frame augmented alone: nothing couples the frames.
    assert torch.equal(out[:1], apply_augment(frame, p))


def test_crop_then_resize_matches_interpolate():
    x = _random_frames(T=2)
    p = _params(y0=3, x0=5, h=8, w=10)
    crop = x[:, :, 3:11, 5:15].double()
    expected = F.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False)
    expected = expected.round().clamp(0, 255).to(torch.uint8)
    out = apply_augment(x, p)
    assert (out.int() - expected.int()).abs().max() <= 1  # float32 vs float64 rounding only


def test_crop_of_half_size_upsamples_pixels_2x():
    # A 2x2 block crop resized to 4x4 with align_corners=False: corner pixels keep their source values.
    x = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    x[0, :, 0, 0] = 100
    x[0, :, 1, 1] = 200
    out = apply_augment(x, AugmentParams(0, 0, 2, 2, False, 1.0, 1.0, 1.0))
    assert out[0, 0, 0, 0] == 100 and out[0, 0, 3, 3] == 200
    assert out[0, 0, 0, 3] == 0 and out[0, 0, 3, 0] == 0


def test_brightness_scales_and_clamps():
    x = torch.tensor([10, 100, 200], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    out = apply_augment(x, _params(h=2, w=2, brightness=1.5))
    assert out[0, :, 0, 0].tolist() == [15, 150, 255]
    out = apply_augment(x, _params(h=2, w=2, brightness=0.5))
    assert out[0, :, 0, 0].tolist() == [5, 50, 100]


def test_contrast_blends_with_the_frame_grey_mean():
    # Frame 0: half black, half grey-200 pixels -> grey mean 100. Frame 1: all 40 -> unchanged by contrast.
    x = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    x[0, :, :, 1] = 200
    x[1] = 40
    out = apply_augment(x, _params(h=2, w=2, contrast=0.5))
    # 0.5 * 0 + 0.5 * 100 = 50;  0.5 * 200 + 50 = 150
    assert out[0, 0].tolist() == [[50, 150], [50, 150]]
    assert torch.equal(out[1], x[1])  # per-frame mean: frame 0's mean must not leak into frame 1
    flat = apply_augment(x, _params(h=2, w=2, contrast=0.0))
    assert torch.all(flat[0] == 100)


def test_saturation_blends_with_pixel_grey():
    x = torch.tensor([200, 100, 10], dtype=torch.uint8).view(1, 3, 1, 1)
    # grey = 0.299 * 200 + 0.587 * 100 + 0.114 * 10 = 119.64
    out = apply_augment(x, AugmentParams(0, 0, 1, 1, False, 1.0, 1.0, 0.0))
    assert out.flatten().tolist() == [120, 120, 120]
    out = apply_augment(x, AugmentParams(0, 0, 1, 1, False, 1.0, 1.0, 2.0))
    # 2 * v - grey, clamped: 280.36 -> 255, 80.36 -> 80, -99.64 -> 0
    assert out.flatten().tolist() == [255, 80, 0]


def test_fixed_order_brightness_then_contrast_then_saturation():
    x = _random_frames(T=2, seed=3)
    p = _params(brightness=1.3, contrast=0.7, saturation=1.4)
    f = x.double()
    f = (f * 1.3).clamp(0, 255)
    r, g, b = f.unbind(1)
    mean = (0.299 * r + 0.587 * g + 0.114 * b).mean(dim=(1, 2)).view(-1, 1, 1, 1)
    f = (0.7 * f + 0.3 * mean).clamp(0, 255)
    r, g, b = f.unbind(1)
    f = (1.4 * f - 0.4 * (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)).clamp(0, 255)
    expected = f.round().to(torch.uint8)
    assert (apply_augment(x, p).int() - expected.int()).abs().max() <= 1


def test_sample_augment_ranges():
    rng = np.random.default_rng(0)
    flips, areas = [], []
    for _ in range(500):
        p = sample_augment(rng, 112)
        assert 0 <= p.y0 and p.y0 + p.h <= 112 and 0 <= p.x0 and p.x0 + p.w <= 112
        areas.append(p.h * p.w / 112**2)
        flips.append(p.flip)
        for f in (p.brightness, p.contrast, p.saturation):
            assert 0.6 <= f <= 1.4
    assert 0.4 < np.mean(flips) < 0.6
    assert min(areas) < 0.2 and max(areas) > 0.8  # the scale range is really used


def test_sample_crop_follows_torchvision_rule():
    # Replay the documented algorithm with the same stream: the drawn box must be its first fitting try.
    rng, replay = np.random.default_rng(5), np.random.default_rng(5)
    y0, x0, h, w = sample_crop(rng, 112, 112, (0.08, 1.0), (3 / 4, 4 / 3))
    for _ in range(10):
        area = 112 * 112 * replay.uniform(0.08, 1.0)
        ar = math.exp(replay.uniform(math.log(3 / 4), math.log(4 / 3)))
        ww, hh = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
        if 0 < ww <= 112 and 0 < hh <= 112:
            assert (h, w) == (hh, ww)
            assert (y0, x0) == (int(replay.integers(0, 112 - hh + 1)), int(replay.integers(0, 112 - ww + 1)))
            break
    else:
        pytest.fail("the replay never fitted")


@pytest.mark.parametrize(
    "H,W,ratio,expected",
    [
        (100, 100, (3 / 4, 4 / 3), (0, 0, 100, 100)),  # square frame: the whole frame
        (100, 200, (3 / 4, 4 / 3), (0, 33, 100, 133)),  # too wide: height kept, width = round(100 * 4/3)
        (200, 100, (3 / 4, 4 / 3), (33, 0, 133, 100)),  # too tall: width kept, height = round(100 / (3/4))
    ],
)
def test_sample_crop_fallback_is_centre_crop(H, W, ratio, expected):
    # A scale range no try can fit (area > the frame) forces the fallback.
    assert sample_crop(np.random.default_rng(0), H, W, (2.0, 3.0), ratio) == expected


def test_zero_jitter_gives_unit_factors():
    p = sample_augment(np.random.default_rng(0), 32, jitter=0.0)
    assert (p.brightness, p.contrast, p.saturation) == (1.0, 1.0, 1.0)


def test_clip_augment_params_pure_function_of_seed_epoch_id():
    a = clip_augment_params(42, 0, 5, 112)
    assert a == clip_augment_params(42, 0, 5, 112)
    assert a != clip_augment_params(42, 1, 5, 112)
    assert a != clip_augment_params(42, 0, 6, 112)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        apply_augment(torch.zeros(2, 3, 4, 4), AugmentParams.identity(4))
    with pytest.raises(ValueError, match="does not fit"):
        apply_augment(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), AugmentParams(2, 0, 4, 4, False, 1, 1, 1))


@pytest.mark.parametrize(
    "p",
    [
        AugmentParams(7, 11, 83, 61, False, 1.0, 1.0, 1.0),  # resize alone: the step most prone to it
        AugmentParams(7, 11, 83, 61, True, 1.2, 0.8, 1.3),
    ],
)
def test_result_does_not_depend_on_thread_count(p):
    # Loader workers run torch with 1 thread, the main process with more: batches must not change.
    x = _random_frames(T=32, H=112, W=112, seed=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = apply_augment(x, p)
        torch.set_num_threads(4)
        many = apply_augment(x, p)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


# ---------------------------------------------------------------------------------------------------------
# The [B, 8] tensor encoding loaders hand to the augmented gather
# ---------------------------------------------------------------------------------------------------------


def test_params_tensor_round_trip():
    a, b = clip_augment_params(42, 0, 5, 112), AugmentParams(0, 3, 1, 111, True, 1.0, 0.0, 1.4)
    one = params_to_tensor(a)
    assert one.shape == (1, 8) and one.dtype == torch.float32
    assert one[0, :5].tolist() == [a.y0, a.x0, a.h, a.w, float(a.flip)]
    both = params_to_tensor([a, b])
    assert both.shape == (2, 8) and torch.equal(both[:1], one)
    back = params_from_tensor(both)
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    assert back[0] == AugmentParams(
        a.y0, a.x0, a.h, a.w, a.flip, f32(a.brightness), f32(a.contrast), f32(a.saturation)
    )
    assert back[1] == AugmentParams(0, 3, 1, 111, True, 1.0, 0.0, f32(1.4))
    assert params_to_tensor([]).shape == (0, 8) and params_from_tensor(torch.zeros(0, 8)) == []


@pytest.mark.parametrize(
    "row,match",
    [
        ([0.5, 0, 4, 4, 0, 1, 1, 1], "whole pixels"),
        ([0, float("nan"), 4, 4, 0, 1, 1, 1], "whole pixels"),
        ([0, 0, 4, 4, 0.5, 1, 1, 1], "flip must be 0 or 1"),
        ([0, 0, 4, 4, 1, -0.1, 1, 1], "colour factors"),
        ([0, 0, 4, 4, 1, 1, float("inf"), 1], "colour factors"),
    ],
)
def test_params_from_tensor_rejects_bad_rows(row, match):
    with pytest.raises(ValueError, match=rf"params\[1\] .*{match}"):
        params_from_tensor(torch.tensor([[0, 0, 4, 4, 0, 1, 1, 1], row]))
    with pytest.raises(ValueError, match=r"params must be \[B, 8\]"):
        params_from_tensor(torch.zeros(2, 7))


# ---------------------------------------------------------------------------------------------------------
# The augmented gather (rdfer.ops.resample): twin, op held to the twin, and today's loader path
#
# Tolerance, in uint8 levels before the normalisation: on the CPU the op is bit-identical to the twin where
# the twin resizes with ATen's generic bilinear kernel (H + W > 128, as for 112x112 frames) and ATen's CPU
# kernels fuse multiply-adds (x86 AVX2/AVX512 builds); elsewhere (smaller frames, whose resize ATen
# computes channels-last with other roundings, and CUDA, whose resize and mean round differently) at most
# 1 level, on at most 0.1% of the values (tests/conftest.py, TOLERANCES[device]["augment_levels"]).
# ---------------------------------------------------------------------------------------------------------

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
HAS_EXT = dispatch.extension() is not None
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="rdfer._C not built (RDFER_SKIP_EXT=1?)")
FUSED_CPU = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _clip_frames(layout: str, batch: int, num_frames: int, size: int, seed: int, device: str) -> torch.Tensor:
    """uint8 [B, T, 3, size, size] frames in one of the layouts the gathers accept."""
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randint(0, 256, s, dtype=torch.uint8, generator=g)  # noqa: E731
    if layout == "contiguous":
        x = make(batch, num_frames, 3, size, size)
    elif layout == "channels_last":  # [B, T, H, W, C] memory, as a decoder writes it
        x = make(batch, num_frames, size, size, 3).permute(0, 1, 4, 2, 3)
    else:  # "cropped": every frame strided inside
        x = make(batch, num_frames, 3, size + 2, size + 3)[:, :, :, 1:-1, 2:-1]
    return x.to(device)


def _batch_params(batch: int, size: int, seed: int) -> list[AugmentParams]:
    """clip_augment_params draws, with edge cases forced into all clips but the last: a 1-pixel crop box,
    the whole frame, flip, and each colour factor at exactly 1 and not."""
    drawn = [clip_augment_params(seed, 3, i, size) for i in range(batch)]
    edges = [
        AugmentParams(size // 2, size - 1, 1, 1, True, 1.3, 0.7, 1.2),
        AugmentParams(0, 0, size, size, False, 1.0, 1.25, 1.0),
        AugmentParams(0, 0, size, size, True, 0.8, 1.0, 0.6),
    ]
    forced = min(len(edges), batch - 1)
    return edges[:forced] + drawn[forced:]


def _levels(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The uint8 levels behind float32 normalised frames [B, K, L, 3, H, W]."""
    shape = (1, 1, 1, 3, 1, 1)
    return ((x.cpu() * std.view(shape) + mean.view(shape)) * 255).round()


def _assert_levels_close(got: torch.Tensor, want: torch.Tensor, exact: bool) -> None:
    if exact:
        assert torch.equal(got, want)
        return
    most, mean = tolerance(got.device, "augment_levels")
    diff = (_levels(got, MEAN, STD) - _levels(want, MEAN, STD)).abs()
    assert diff.max() <= most and diff.mean() <= mean, (diff.max().item(), diff.mean().item())


@pytest.fixture
def fast(monkeypatch):
    """The public dispatcher, with RDFER_KERNELS=fast: the op or an error, never the twin."""
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    return resample.gather_clips_augmented


def test_twin_is_augment_then_gather():
    # The definition: each gathered frame equals that frame of the whole clip augmented first (apply_augment,
    # today's CPU loader path), then gathered and normalised; per-frame steps, so bit for bit.
    frames = _clip_frames("contiguous", 3, 9, 21, seed=0, device="cpu")
    idx = torch.randint(0, 9, (3, 4, 2), generator=torch.Generator().manual_seed(1))
    params = params_to_tensor(_batch_params(3, 21, seed=2))
    whole = torch.stack([apply_augment(frames[b], p) for b, p in enumerate(params_from_tensor(params))])
    want = gather_clips_reference(whole, idx, MEAN, STD, torch.bfloat16)
    got = gather_clips_augmented_reference(frames, idx, params, MEAN, STD, torch.bfloat16)
    assert torch.equal(got, want) and got.stride() == want.stride()


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "cropped"])
@pytest.mark.parametrize(
    ("batch", "num_frames", "size", "clips", "length"),
    [
        (1, 5, 112, 4, 4),  # B = 1, T = 5 < K*L = 16: repeated indices
        (5, 7, 112, 2, 4),  # every edge case at the training size
        (4, 9, 67, 2, 3),  # odd size, H + W > 128
        (3, 6, 13, 4, 4),  # small odd size
    ],
)
def test_op_matches_twin(fast, device, layout, batch, num_frames, size, clips, length):
    frames = _clip_frames(layout, batch, num_frames, size, seed=size, device=device)
    idx = torch.randint(
        -num_frames, num_frames, (batch, clips, length), generator=torch.Generator().manual_seed(3)
    )
    params = params_to_tensor(_batch_params(batch, size, seed=size + 1))
    mean, std, idx = MEAN.to(device), STD.to(device), idx.to(device)
    got = fast(frames, idx, params, mean, std)
    want = gather_clips_augmented_reference(frames, idx, params, mean, std)
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    _assert_levels_close(got, want, exact=device == "cpu" and FUSED_CPU and 2 * size > 128)
    # Other output dtypes come from the same levels through the same table.
    assert torch.equal(
        fast(frames, idx, params.to(device), mean, std, torch.bfloat16), got.to(torch.bfloat16)
    )


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "cropped"])
def test_identity_params_give_the_normalized_gather(fast, device, layout):
    frames = _clip_frames(layout, 2, 6, 17, seed=5, device=device)
    idx = torch.tensor([[[0, 5, 5]], [[-1, 2, 3]]], device=device)
    identity = params_to_tensor([AugmentParams.identity(17)] * 2)
    mean, std = MEAN.to(device), STD.to(device)
    for out_dtype in (torch.float32, torch.bfloat16):
        want = torch.ops.rdfer.gather_clips_normalized(frames, idx, mean, std, out_dtype)
        assert torch.equal(fast(frames, idx, identity, mean, std, out_dtype), want)
        assert torch.equal(
            gather_clips_augmented_reference(frames, idx, identity, mean, std, out_dtype), want
        )


@needs_ext
def test_op_matches_todays_loader_path(fast):
    # The loader today: apply_augment on all T frames with the drawn (float64) parameters, then the normalised
    # gather. The op reads the parameters as float32, so (1 - factor) may round differently: within tolerance.
    frames = _clip_frames("contiguous", 2, 8, 112, seed=7, device="cpu")
    idx = torch.randint(0, 8, (2, 4, 4), generator=torch.Generator().manual_seed(8))
    drawn = [clip_augment_params(42, 1, i, 112) for i in range(2)]
    whole = torch.stack([apply_augment(frames[b], p) for b, p in enumerate(drawn)])
    want = torch.ops.rdfer.gather_clips_normalized(whole, idx, MEAN, STD, torch.float32)
    _assert_levels_close(fast(frames, idx, params_to_tensor(drawn), MEAN, STD), want, exact=False)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_empty_shapes(fast, device):
    frames = _clip_frames("contiguous", 2, 4, 5, seed=9, device=device)
    params = params_to_tensor([AugmentParams.identity(5)] * 2)
    for idx in (torch.zeros(2, 0, 4, dtype=torch.long), torch.zeros(2, 3, 0, dtype=torch.long)):
        got = fast(frames, idx.to(device), params, MEAN, STD)
        assert got.shape == gather_clips_augmented_reference(frames, idx.to(device), params, MEAN, STD).shape
    assert fast(frames[:0], torch.zeros(0, 2, 2, dtype=torch.long), params[:0], MEAN, STD).shape[0] == 0


@needs_ext
@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda f, i, p: (f.float(), i, p), ValueError, "frames must be uint8"),
        (lambda f, i, p: (f[:, :, :2], i, p), ValueError, r"3 \(RGB\) channels"),
        (lambda f, i, p: (f, i, p[:, :7]), ValueError, r"params must be \[B, 8\]"),
        (lambda f, i, p: (f, i, p[:1]), ValueError, r"params must be \[B, 8\].*B = 2"),
        (lambda f, i, p: (f, i, p.int()), ValueError, "params must be float32"),
        (lambda f, i, p: (f, i.float(), p), ValueError, "indices must be int64 or int32"),
        (lambda f, i, p: (f, i + 8, p), IndexError, "index 8 is out of bounds for 8 frames"),
        (lambda f, i, p: (f, i, _with(p, 0, 2.5)), ValueError, r"params\[1\] crop box .* whole pixels"),
        (
            lambda f, i, p: (f, i, _with(p, 0, 1.0)),
            ValueError,
            r"params\[1\] crop box .* does not fit in 6x6",
        ),
        (lambda f, i, p: (f, i, _with(p, 1, -1.0)), ValueError, "does not fit in 6x6"),
        (lambda f, i, p: (f, i, _with(p, 3, 0.0)), ValueError, "does not fit in 6x6"),
        (lambda f, i, p: (f, i, _with(p, 4, 2.0)), ValueError, "flip must be 0 or 1"),
        (lambda f, i, p: (f, i, _with(p, 6, -0.5)), ValueError, "colour factors"),
    ],
)
def test_clear_errors(change, error, match):
    frames = torch.zeros(2, 8, 3, 6, 6, dtype=torch.uint8)
    idx = torch.zeros(2, 2, 2, dtype=torch.long)
    params = params_to_tensor([AugmentParams.identity(6)] * 2)
    with pytest.raises(error, match=match):
        torch.ops.rdfer.gather_clips_augmented(*change(frames, idx, params), MEAN, STD, torch.float32)


def _with(params: torch.Tensor, column: int, value: float) -> torch.Tensor:
    """params with clip 1's `column` set to value."""
    out = params.clone()
    out[1, column] = value
    return out
