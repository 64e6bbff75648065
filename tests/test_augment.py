"""Clip-consistent augmentation: parameter sampling and the pixel definition of each step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rdfer.data.augment import AugmentParams, apply_augment, clip_augment_params, sample_augment, sample_crop
from rdfer.data.sampling import clip_rng


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


@pytest.mark.parametrize("H,W,ratio,expected", [
    (100, 100, (3 / 4, 4 / 3), (0, 0, 100, 100)),  # square frame: the whole frame
    (100, 200, (3 / 4, 4 / 3), (0, 33, 100, 133)),  # too wide: height kept, width = round(100 * 4/3)
    (200, 100, (3 / 4, 4 / 3), (33, 0, 133, 100)),  # too tall: width kept, height = round(100 / (3/4))
])
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


@pytest.mark.parametrize("p", [
    AugmentParams(7, 11, 83, 61, False, 1.0, 1.0, 1.0),  # resize alone: the step most prone to it
    AugmentParams(7, 11, 83, 61, True, 1.2, 0.8, 1.3),
])
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
