"""Frame sampling (docs/method.md §1) and the seeded random streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdfer.data.sampling import clip_rng, epoch_order, uniform_indices
from rdfer.models.rdfer_net import synopsis_indices


def test_uniform_short_clip_repeats_frames():
    idx = uniform_indices(3, 64)
    assert idx.dtype == np.int64 and idx.shape == (64,)
    # floor(i*3/64): i = 0..21 -> 0, 22..42 -> 1, 43..63 -> 2
    expected = np.array([0] * 22 + [1] * 21 + [2] * 21)
    np.testing.assert_array_equal(idx, expected)


def test_uniform_exact_length_is_identity():
    np.testing.assert_array_equal(uniform_indices(64, 64), np.arange(64))


def test_uniform_100_by_hand():
    idx = uniform_indices(100, 64)
    # floor(i * 100 / 64) for a few i, worked out by hand.
    by_hand = {0: 0, 1: 1, 2: 3, 3: 4, 5: 7, 10: 15, 31: 48, 32: 50, 63: 98}
    for i, v in by_hand.items():
        assert idx[i] == v, i
    assert np.all(np.diff(idx) >= 1)  # strictly increasing when N > T


def test_uniform_847_by_hand():
    idx = uniform_indices(847, 64)
    by_hand = {0: 0, 1: 13, 2: 26, 7: 92, 32: 423, 63: 833}
    for i, v in by_hand.items():
        assert idx[i] == v, i
    np.testing.assert_array_equal(idx, np.floor(np.arange(64) * 847 / 64).astype(np.int64))


@pytest.mark.parametrize("n", [1, 2, 63, 65, 127, 10_000])
def test_uniform_in_range_and_sorted(n):
    idx = uniform_indices(n, 64)
    assert idx.min() == 0 and idx.max() <= n - 1
    assert np.all(np.diff(idx) >= 0)
    assert len(np.unique(idx)) == min(n, 64)  # every frame used when short, no repeats when long


@pytest.mark.parametrize("n", [0, -5])
def test_uniform_rejects_empty_clip(n):
    with pytest.raises(ValueError, match="num_frames"):
        uniform_indices(n)


def test_synopsis_eval_centres():
    idx = synopsis_indices(3, T=64, L=16, train=False)
    assert idx.dtype == torch.int64 and idx.shape == (3, 16)
    expected = torch.tensor([int((i + 0.5) * 64 / 16) for i in range(16)])  # 2, 6, 10, ..., 62
    assert expected[0] == 2 and expected[-1] == 62
    assert torch.equal(idx, expected.expand(3, 16))


def test_synopsis_eval_centres_odd_segment():
    # T/L = 3: centres floor(1.5 + 3i) = 1, 4, 7, 10
    assert synopsis_indices(1, T=12, L=4).tolist() == [[1, 4, 7, 10]]


def test_synopsis_train_within_segments_and_seeded():
    g = torch.Generator().manual_seed(7)
    idx = synopsis_indices(256, T=64, L=16, train=True, generator=g)
    assert idx.shape == (256, 16) and idx.dtype == torch.int64
    seg = torch.arange(16) * 4
    offsets = idx - seg
    assert offsets.min() == 0 and offsets.max() == 3  # inside each segment, every offset occurs
    assert not torch.equal(idx[0], idx[1])  # independent per video
    again = synopsis_indices(256, T=64, L=16, train=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(idx, again)
    other = synopsis_indices(256, T=64, L=16, train=True, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(idx, other)


def test_synopsis_requires_divisible():
    with pytest.raises(ValueError, match="divisible"):
        synopsis_indices(2, T=64, L=10)


def test_clip_rng_pure_function():
    a = clip_rng(42, 3, 17).random(5)
    np.testing.assert_array_equal(a, clip_rng(42, 3, 17).random(5))
    for other in [(42, 4, 17), (42, 3, 18), (43, 3, 17)]:
        assert not np.array_equal(a, clip_rng(*other).random(5))
    with pytest.raises(ValueError):
        clip_rng(42, -1, 0)


def test_epoch_order_is_permutation_and_pure():
    o = epoch_order(50, 42, 0)
    assert o.dtype == np.int64
    np.testing.assert_array_equal(np.sort(o), np.arange(50))
    np.testing.assert_array_equal(o, epoch_order(50, 42, 0))
    assert not np.array_equal(o, epoch_order(50, 42, 1))
    assert not np.array_equal(o, epoch_order(50, 7, 0))


def test_streams_do_not_alias():
    # numpy pads short entropy with zeros; the spawn keys must keep order and clip streams apart.
    order_draw = epoch_order(1000, 42, 0)
    clip_draw = clip_rng(42, 0, 0).permutation(1000)
    assert not np.array_equal(order_draw, clip_draw)
