"""Key-expression re-sampling (docs/method.md §2): the twins worked by hand, the C++/CUDA op held to them.

The op must give bit-identical positions, indices and gathers (torch.equal, no tolerance). The ops have no
gradient: the public gather sends frames that need one to the twin.
"""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES

from rdfer.ops import dispatch, resample
from rdfer.ops.resample import clip_indices_reference, gather_clips_reference, key_positions_reference

HAS_EXT = dispatch.extension() is not None
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="rdfer._C not built (RDFER_SKIP_EXT=1?)")


def _ops(device: str):
    """torch.ops.rdfer for `device`; a GPU run whose extension lacks CUDA kernels is a build failure."""
    key = "CUDA" if device == "cuda" else "CPU"
    assert torch._C._dispatch_has_kernel_for_dispatch_key("rdfer::gather_clips", key), (
        f"rdfer._C has no {key} kernels: rebuild with nvcc and a CUDA torch present"
    )
    return torch.ops.rdfer


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# The twins, worked by hand
# ---------------------------------------------------------------------------------------------------------


def test_twin_key_positions_by_hand():
    # Ls = 4 instances, C = 3 classes. Class 0 peaks at 0.75 twice (t=1 and t=3: the first wins); class 1
    # peaks at 0.5 twice (t=0 and t=1); class 2 peaks at 0.75 at t=2, tied with class 0 (the lower class
    # ranks first). Order: class 0, class 2, class 1.
    probs = torch.tensor([[[0.25, 0.5, 0.0], [0.75, 0.5, 0.25], [0.0, 0.125, 0.75], [0.75, 0.25, 0.125]]])
    positions, classes = key_positions_reference(probs, 3, 16)
    # T / Ls = 4: instance t covers frames [4t, 4t + 4), centre 4t + 1.5.
    assert classes.tolist() == [[0, 2, 1]]
    assert positions.tolist() == [[5.5, 9.5, 1.5]]
    assert positions.dtype == torch.float32 and classes.dtype == torch.int64
    positions, classes = key_positions_reference(probs, 1, 16)
    assert classes.tolist() == [[0]] and positions.tolist() == [[5.5]]
    with pytest.raises(ValueError, match="k must be in"):
        key_positions_reference(probs, 4, 16)


def test_twin_clip_indices_by_hand():
    centers = torch.tensor([[0.0, 63.0, 10.0, 20.0]])
    strides = torch.tensor([[2.0, 3.0, 1.0, 0.0]])
    idx = clip_indices_reference(centers, strides, 4, 64)
    # offsets (j - 1.5) * stride: [-3,-1,1,3], [-4.5,-1.5,1.5,4.5], [-1.5,-0.5,0.5,1.5], 0.
    assert idx.tolist() == [[[0, 0, 1, 3], [59, 62, 63, 63], [9, 10, 11, 12], [20, 20, 20, 20]]]
    assert idx.dtype == torch.int64
    # Halves round up (floor(x + 0.5)), not to even: 9.5 -> 10 and 10.5 -> 11; -0.5 -> 0.
    two = clip_indices_reference(torch.tensor([[10.0, 0.0]]), torch.tensor([[1.0, 1.0]]), 2, 64)
    assert two.tolist() == [[[10, 11], [0, 1]]]


def test_twin_gather_by_hand_with_duplicates():
    frames = torch.arange(12, dtype=torch.uint8).view(2, 3, 2, 1, 1)  # frame (b, t) holds 2(3b+t), 2(3b+t)+1
    indices = torch.tensor([[[0, 0], [2, 1]], [[1, 1], [-1, 0]]])  # duplicates, and -1 = the last frame
    out = gather_clips_reference(frames, indices)
    assert out.shape == (2, 2, 2, 2, 1, 1)
    assert out[..., 0, 0, 0].tolist() == [[[0, 0], [4, 2]], [[8, 8], [10, 6]]]

    levels = torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1, 1, 1).expand(1, 2, 3, 2, 2)
    norm = gather_clips_reference(levels, torch.tensor([[[1, 0, 1]]]), torch.tensor(0.5), torch.tensor(0.25))
    # (x/255 - 0.5) / 0.25: 255 -> 2, 0 -> -2; every frame channels-last.
    assert norm[0, 0, :, 0, 0, 0].tolist() == [2.0, -2.0, 2.0]
    assert norm.stride() == (36, 36, 12, 1, 6, 3)


def test_twin_gather_gradient_by_hand():
    frames = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1, 1, 1).requires_grad_()
    indices = torch.tensor([[[0, 0, 2]]])
    gather_clips_reference(frames, indices, torch.tensor([0.0]), torch.tensor([2.0])).sum().backward()
    assert frames.grad.flatten().tolist() == [1.0, 0.0, 0.5]  # frame 0 twice, frame 2 once, each / std


def test_twin_gradcheck():
    frames = torch.randn(2, 5, 2, 3, 2, dtype=torch.float64, generator=_gen(0)).requires_grad_()
    indices = torch.tensor([[[0, 4, 4], [1, 1, 2]], [[3, 0, 3], [4, 4, 4]]])
    assert torch.autograd.gradcheck(lambda f: gather_clips_reference(f, indices), (frames,))


# ---------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------


def test_dispatch_rule(monkeypatch):
    monkeypatch.setenv("RDFER_KERNELS", "reference")
    assert not resample._fast("cpu")
    monkeypatch.setenv("RDFER_KERNELS", "auto")
    assert resample._fast("cpu") == HAS_EXT
    assert not resample._fast("meta")  # no kernels there: the twin
    monkeypatch.setattr(dispatch, "extension", lambda: None)
    assert not resample._fast("cpu")
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="rdfer._C"):
        resample._fast("cpu")


def spy_on_ops(monkeypatch) -> list[str]:
    """The names of the torch.ops.rdfer ops called from now on, in order."""
    calls = []
    real = torch.ops.rdfer

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(torch.ops, "rdfer", Spy(), raising=False)
    return calls


@needs_ext
def test_public_functions_use_the_op(monkeypatch):
    calls = spy_on_ops(monkeypatch)
    probs = torch.rand(2, 16, 7, generator=_gen(1))
    positions, _ = resample.key_positions(probs, 4, 64)
    idx = resample.clip_indices(positions, torch.full((2, 4), 2.0), 4, 64)
    frames = torch.randint(0, 256, (2, 64, 3, 4, 4), dtype=torch.uint8, generator=_gen(2))
    resample.gather_clips(frames, idx)
    resample.gather_clips(frames, idx, torch.rand(3), torch.rand(3) + 0.5)
    resample.gather_clips_augmented(
        frames, idx, torch.tensor([[0, 0, 4, 4, 1, 1.2, 0.8, 1.1]] * 2), torch.rand(3), torch.rand(3) + 0.5
    )
    assert calls == [
        "key_positions",
        "clip_indices",
        "gather_clips",
        "gather_clips_normalized",
        "gather_clips_augmented",
    ]
    monkeypatch.setenv("RDFER_KERNELS", "reference")
    calls.clear()
    resample.gather_clips(frames, idx)
    assert calls == []


# ---------------------------------------------------------------------------------------------------------
# The op against the twin
# ---------------------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("batch", "instances", "classes", "k", "num_frames"),
    [(1, 16, 7, 4, 64), (5, 16, 11, 11, 64), (3, 7, 7, 1, 5), (4, 1, 3, 3, 64), (6, 16, 7, 4, 17)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_key_positions_matches_twin(device, batch, instances, classes, k, num_frames, dtype):
    ops = _ops(device)
    g = _gen(batch * 100 + classes)
    smooth = torch.rand(batch, instances, classes, generator=g)
    # Three levels only: ties within and across classes.
    coarse = torch.randint(0, 3, (batch, instances, classes), generator=g) / 2.0
    for probs in (smooth, coarse):
        probs = probs.to(device, dtype)
        got = ops.key_positions(probs, k, num_frames)
        want = key_positions_reference(probs, k, num_frames)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_key_positions_nan_and_noncontiguous(device):
    ops = _ops(device)
    probs = torch.rand(4, 16, 7, generator=_gen(3))
    probs[0, 5, 2] = float("nan")  # NaN ranks first, at its first instance, as max() and sort() rank it
    probs[1, :, 3] = float("nan")
    probs = probs.to(device).transpose(1, 2).contiguous().transpose(1, 2)
    got = ops.key_positions(probs, 4, 64)
    want = key_positions_reference(probs, 4, 64)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[1][0, 0] == 2 and got[1][1, 0] == 3


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("length", "num_frames"), [(4, 64), (5, 64), (1, 64), (4, 3), (4, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_clip_indices_matches_twin(device, length, num_frames, dtype):
    ops = _ops(device)
    g = _gen(length * 1000 + num_frames)
    centers = torch.rand(8, 4, generator=g) * (num_frames + 20) - 10
    centers[:4] = torch.randint(-4, 2 * num_frames + 4, (4, 4), generator=g) / 2.0  # halves: rounding ties
    strides = torch.rand(8, 4, generator=g) * 8
    strides[0] = 0.0
    strides[1] = torch.tensor([0.5, 1.0, 2.0, 4.0])
    centers[2, 0], centers[2, 1] = float("inf"), -float("inf")
    centers, strides = centers.to(device, dtype), strides.to(device, dtype)
    got = ops.clip_indices(centers, strides, length, num_frames)
    assert torch.equal(got, clip_indices_reference(centers, strides, length, num_frames))
    # Non-contiguous input, and the public wrapper's broadcasting of [B, 1] strides.
    got = resample.clip_indices(centers.t(), strides[:, :1].t(), length, num_frames)
    assert torch.equal(got, clip_indices_reference(centers.t(), strides[:, :1].t(), length, num_frames))


@needs_ext
def test_clip_indices_nan_like_the_cpu_twin():
    centers = torch.tensor([[float("nan"), 3.0]])
    got = torch.ops.rdfer.clip_indices(centers, torch.ones(1, 2), 2, 64)
    assert torch.equal(got, clip_indices_reference(centers, torch.ones(1, 2), 2, 64))


def _frames(kind: str, dtype: torch.dtype, batch: int, num_frames: int, device: str, seed: int):
    """[B, T, 3, 7, 5] frames: contiguous or one of three non-contiguous layouts."""
    g = _gen(seed)
    if dtype == torch.uint8:
        make = lambda *s: torch.randint(0, 256, s, dtype=torch.uint8, generator=g)  # noqa: E731
    else:
        make = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    if kind == "contiguous":
        x = make(batch, num_frames, 3, 7, 5)
    elif kind == "every_other_frame":  # strided T: frames stay dense
        x = make(batch, 2 * num_frames, 3, 7, 5)[:, ::2]
    elif kind == "channels_last":  # [B, T, H, W, C] memory, as a decoder writes it
        x = make(batch, num_frames, 7, 5, 3).permute(0, 1, 4, 2, 3)
    else:  # "cropped": every frame strided inside
        x = make(batch, num_frames, 3, 9, 8)[:, :, :, 1:8, 2:7]
    return x.to(device)


def _indices(batch: int, clips: int, length: int, num_frames: int, device: str, seed: int) -> torch.Tensor:
    idx = torch.randint(-num_frames, num_frames, (batch, clips, length), generator=_gen(seed))
    idx[0, 0, 0], idx[-1, -1, -1] = 0, num_frames - 1  # both ends
    idx[0, -1] = idx[0, 0, 0]  # a duplicated clip position
    return idx.to(device)


LAYOUTS = ["contiguous", "every_other_frame", "channels_last", "cropped"]


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("batch", "num_frames"), [(1, 64), (3, 5)])  # T=5 < K*L=16: many duplicates
def test_gather_matches_twin(device, dtype, layout, batch, num_frames):
    ops = _ops(device)
    frames = _frames(layout, dtype, batch, num_frames, device, seed=batch + num_frames)
    idx = _indices(batch, 4, 4, num_frames, device, seed=7)
    got = ops.gather_clips(frames, idx)
    want = gather_clips_reference(frames, idx)
    assert got.shape == want.shape and got.dtype == want.dtype and got.is_contiguous()
    assert torch.equal(got, want)
    assert torch.equal(ops.gather_clips(frames, idx.int()), want)  # int32 indices, as the twin accepts


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "cropped"])
def test_normalized_gather_matches_twin(device, dtype, out_dtype, layout):
    ops = _ops(device)
    frames = _frames(layout, dtype, 2, 6, device, seed=11)
    idx = _indices(2, 4, 4, 6, device, seed=12)
    for mean, std in [
        (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])),
        (torch.tensor([0.5]), torch.tensor([0.5])),  # one value for every channel
    ]:
        mean, std = mean.to(device), std.to(device)
        got = ops.gather_clips_normalized(frames, idx, mean, std, out_dtype)
        want = gather_clips_reference(frames, idx, mean, std, out_dtype)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.stride() == want.stride()  # channels-last frames, viewed as [B, K, L, C, H, W]
        assert torch.equal(got, want)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_normalized_gather_extreme_uint8_levels(device):
    # Every uint8 level in every channel, so each entry of the op's lookup table is checked.
    ops = _ops(device)
    frames = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 16, 16).expand(1, 2, 3, 16, 16).to(device)
    idx = torch.tensor([[[1, 0]]], device=device)
    mean, std = torch.tensor([0.1, 0.5, 0.9], device=device), torch.tensor([0.3, 0.7, 0.11], device=device)
    for out_dtype in (torch.float32, torch.bfloat16):
        got = ops.gather_clips_normalized(frames, idx, mean, std, out_dtype)
        assert torch.equal(got, gather_clips_reference(frames, idx, mean, std, out_dtype))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_empty_shapes(device):
    ops = _ops(device)
    frames = torch.rand(2, 4, 3, 2, 2, device=device)
    for idx in (torch.zeros(2, 0, 4, dtype=torch.long), torch.zeros(2, 3, 0, dtype=torch.long)):
        idx = idx.to(device)
        assert torch.equal(ops.gather_clips(frames, idx), gather_clips_reference(frames, idx))
        got = ops.gather_clips_normalized(frames, idx, torch.zeros(3), torch.ones(3), torch.float32)
        assert got.shape == gather_clips_reference(frames, idx, torch.zeros(3), torch.ones(3)).shape
    empty = torch.empty(0, 4, device=device)
    assert ops.clip_indices(empty, empty, 4, 64).shape == (0, 4, 4)
    assert ops.key_positions(torch.rand(0, 16, 7, device=device), 4, 64)[0].shape == (0, 4)


@needs_ext
def test_clear_errors():
    ops = torch.ops.rdfer
    frames = torch.zeros(2, 8, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(IndexError, match="index 8 is out of bounds for 8 frames"):
        ops.gather_clips(frames, torch.full((2, 1, 1), 8))
    with pytest.raises(IndexError, match="index -9 is out of bounds"):
        bad = torch.full((2, 1, 1), -9)
        ops.gather_clips_normalized(frames, bad, torch.zeros(3), torch.ones(3), torch.float32)
    with pytest.raises(ValueError, match=r"indices must be \[B, K, L\] with B = 2"):
        ops.gather_clips(frames, torch.zeros(3, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="frames must be"):
        ops.gather_clips(frames[0], torch.zeros(2, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="mean must hold 1 or C = 3 values"):
        ops.gather_clips_normalized(
            frames, torch.zeros(2, 1, 1, dtype=torch.long), torch.zeros(2), torch.ones(3), torch.float32
        )
    with pytest.raises(ValueError, match="k must be in"):
        ops.key_positions(torch.rand(1, 16, 7), 8, 64)
    with pytest.raises(ValueError, match="same shape"):
        ops.clip_indices(torch.zeros(2, 4), torch.zeros(2, 3), 4, 64)
    with pytest.raises(ValueError, match="mean was given without std"):
        resample.gather_clips(frames, torch.zeros(2, 1, 1, dtype=torch.long), torch.zeros(3))


# ---------------------------------------------------------------------------------------------------------
# Gradients: the twin's
# ---------------------------------------------------------------------------------------------------------


@needs_ext
def test_gather_that_needs_a_gradient_runs_the_twin(monkeypatch):
    calls = spy_on_ops(monkeypatch)
    frames = torch.randn(2, 5, 3, 2, 2, dtype=torch.float64, generator=_gen(21))
    idx = _indices(2, 4, 4, 5, "cpu", seed=22)  # T=5 < 16 gathered frames: duplicates everywhere
    mean, std = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), torch.tensor([0.5, 2.0, 0.7])
    for args in [(), (mean, std)]:
        x, y = frames.clone().requires_grad_(), frames.clone().requires_grad_()
        resample.gather_clips(x, idx, *args).sum().backward()
        gather_clips_reference(y, idx, *args).sum().backward()
        assert torch.equal(x.grad, y.grad)
    assert calls == []
    with torch.no_grad():  # nothing needs a gradient: the op again
        resample.gather_clips(frames.requires_grad_(), idx)
    assert calls == ["gather_clips"]


@needs_ext
def test_opcheck_and_compile():
    """Fake kernels hold under torch.library.opcheck and torch.compile."""
    frames = torch.randn(2, 6, 3, 4, 4)
    frames_u8 = torch.randint(0, 256, (2, 6, 3, 4, 4), dtype=torch.uint8)
    idx = torch.tensor([[[0, 5], [5, 5]], [[1, 2], [3, 0]]])
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.4])
    ops = torch.ops.rdfer
    checks = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for op, args in [
        (ops.key_positions, (torch.rand(2, 16, 7), 4, 64)),
        (ops.clip_indices, (torch.rand(2, 4) * 64, torch.rand(2, 4) * 4, 4, 64)),
        (ops.gather_clips, (frames, idx)),
        (ops.gather_clips_normalized, (frames, idx, mean, std, torch.bfloat16)),
        (ops.gather_clips_normalized, (frames_u8, idx, mean, std, torch.float32)),
        (
            ops.gather_clips_augmented,
            (frames_u8, idx, torch.tensor([[1, 0, 3, 4, 1, 1.2, 0.8, 1.1]] * 2), mean, std, torch.bfloat16),
        ),
    ]:
        torch.library.opcheck(op, args, test_utils=checks)

    def detail_input(probs, frames):
        positions, _ = resample.key_positions(probs, 2, frames.shape[1])
        idx = resample.clip_indices(positions, torch.full_like(positions, 2.0), 2, frames.shape[1])
        return resample.gather_clips(frames, idx, mean, std)

    probs = torch.rand(2, 16, 7, generator=_gen(41))
    compiled = torch.compile(detail_input, backend="aot_eager", fullgraph=True)
    positions = key_positions_reference(probs, 2, 6)[0]
    idx = clip_indices_reference(positions, torch.full((2, 2), 2.0), 2, 6)
    for x in (frames_u8, frames.requires_grad_()):  # the op's gather; the twin's, for the gradient
        got = compiled(probs, x)
        want = gather_clips_reference(x, idx, mean, std)
        assert torch.equal(got, want) and got.stride() == want.stride()
    (g_compiled,) = torch.autograd.grad(got.sum(), frames)
    (g_twin,) = torch.autograd.grad(want.sum(), frames)
    assert torch.equal(g_compiled, g_twin)
