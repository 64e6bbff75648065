"""The DALI clip loader: the CPU loader's batches (rdfer.data.loader), decoded and augmented by NVIDIA DALI.

What is chosen is chosen by the package's own functions, in Python, so it is identical to the CPU loader by
construction: the clip order (the sampler or the eval order), the frame indices (uniform_indices over
list_frames / count_frames) and each clip's augmentation (clip_augment_params). DALI does the pixel work:
decoding (nvJPEG / NVDEC with device="mixed" on a GPU, libjpeg-turbo / libavcodec on the CPU), the resize to
image_size (linear, antialiased like PIL's bilinear), then apply_augment's steps in its order: crop + linear
resize back (no antialias, pixel centres as align_corners=False), horizontal flip, brightness, contrast around
the frame's mean grey, saturation, each clamped to [0, 255], rounded once at the end.

Frame folders: one DALI sample per frame (the clip's parameters repeated over its T frames). Videos: one
sample per clip, a [T, H, W, 3] sequence decoded at the chosen indices (VP8/VP9/MJPEG on the CPU; H.264/HEVC/
AV1 only with a GPU).

Bad clips: a folder or video that cannot be listed or opened is reported before DALI sees it; a batch whose
decoding fails in DALI is read again by the CPU twin (ClipDataset), which names the bad file, and either
raises that DataError or, with skip_bad, drops and lists the clip, exactly as the CPU loader does.

DALI is imported here only: `import rdfer` never imports it.
"""
from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rdfer.data.augment import AugmentParams, clip_augment_params
from rdfer.data.frames import count_frames, list_frames
from rdfer.data.loader import ClipCollate, ClipDataset, EpochShuffleSampler, SkippedClip
from rdfer.data.records import DataError, Split
from rdfer.data.sampling import uniform_indices

_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # as augment._grey


def _grey(x, video: bool):
    """Luma [.., 1] of a DALI node [(F,) H, W, 3] (DALI's indexing has no Ellipsis)."""
    wr, wg, wb = _GREY_WEIGHTS
    if video:
        return x[:, :, :, 0:1] * wr + x[:, :, :, 1:2] * wg + x[:, :, :, 2:3] * wb
    return x[:, :, 0:1] * wr + x[:, :, 1:2] * wg + x[:, :, 2:3] * wb


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def split_source(split: Split) -> str:
    """'frames' when every clip is a frame folder, 'video' when every clip is a file, else 'mixed'."""
    kinds = {Path(r.path).suffix == "" or Path(r.path).is_dir() for r in split.records}
    return "frames" if kinds == {True} else "video" if kinds == {False} else "mixed"


@dataclass
class _Prepared:
    """One batch as the pipeline's inputs: what Python chose, plus the clips already found bad."""

    batch: list[int]  # split indices of the batch's clips, in batch order
    positions: list[int]  # those of its good clips so far (DALI may still fail to decode one)
    encoded: list[np.ndarray]  # per DALI sample: a file's bytes
    frames: list[np.ndarray]  # video only: int32 [T] frame indices per clip
    roi: list[np.ndarray]  # int32 [4] crop box (y0, x0, h, w) per sample
    flip: list[np.ndarray]  # int32 [] per sample
    colour: list[np.ndarray]  # float32 [3] (brightness, contrast, saturation) per sample
    skipped: list[str]


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"{path}: missing file") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e})") from e


class DaliClipLoader:
    """Batches {frames: uint8 [B, T, 3, H, W] on `device`, label, sample_id, skipped}, as make_loader's.

    `dataset` (the CPU twin, also the epoch holder) and `sampler` make loader.set_loader_epoch work unchanged.
    train: order from `sampler` (default EpochShuffleSampler), last partial batch dropped; eval: `sampler`
    (a list of split indices, e.g. distributed.eval_shard) or the whole split, every clip once, in order.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        train: bool,
        num_frames: int = 64,
        image_size: int = 112,
        seed: int = 42,
        skip_bad: bool = False,
        sampler: Sequence[int] | EpochShuffleSampler | None = None,
        epoch: int = 0,
        augment: dict | None = None,
        device: torch.device | str = "cpu",
        threads: int | None = None,
        prefetch: int = 2,
    ) -> None:
        source = split_source(split)
        if source == "mixed":
            raise ValueError(f"{split.dataset}/{split.name}: the DALI loader needs all frame folders or all "
                             "videos, not a mix")
        self.source = source
        self.dataset = ClipDataset(split, num_frames, image_size, train=train, seed=seed, skip_bad=skip_bad,
                                   augment=augment)
        self.dataset.set_epoch(epoch)
        if sampler is None and train:
            sampler = EpochShuffleSampler(len(split.records), seed, epoch)
        elif hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.sampler = sampler
        self.batch_size, self.train = batch_size, train
        available = len(sampler) if sampler is not None else len(split.records)
        if train and available < batch_size:
            raise ValueError(f"{split.dataset}/{split.name}: {available} training clips "
                             f"< batch_size {batch_size}")
        self.device = torch.device(device)
        self.threads = threads or min(len(os.sched_getaffinity(0)), 8)
        self.prefetch = max(1, prefetch)
        self.collate = ClipCollate(num_frames, image_size)
        self._pipe = None
        self._ended = False  # the last pass ran to its end: the pipeline only needs a reset
        self._warned = False

    # ---- order and inputs (pure Python, the package's own functions) ------------------------------------

    def _order(self) -> list[int]:
        if self.sampler is None:
            return list(range(len(self.dataset)))
        return [int(i) for i in self.sampler]

    def _batches(self) -> list[list[int]]:
        order = self._order()
        stop = len(order) - len(order) % self.batch_size if self.train else len(order)
        return [order[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _params(self, sample_id: int) -> AugmentParams:
        d = self.dataset
        if not d.train:
            return AugmentParams.identity(d.image_size)
        return clip_augment_params(d.seed, d.epoch, sample_id, d.image_size, **d.augment)

    def _prepare(self, positions: list[int]) -> _Prepared:
        d = self.dataset
        out = _Prepared(list(positions), [], [], [], [], [], [], [])
        for i in positions:
            record = d.split.records[i]
            path = Path(record.path)
            try:
                if self.source == "frames":
                    if not path.is_dir():
                        count_frames(path)  # raises the CPU loader's own message for a missing clip
                    files = list_frames(path)
                    picks = [files[k] for k in uniform_indices(len(files), d.num_frames)]
                    encoded = [_read_bytes(f) for f in picks]
                else:
                    indices = uniform_indices(count_frames(path), d.num_frames).astype(np.int32)
                    encoded = [_read_bytes(path)]
            except DataError as e:
                if not d.skip_bad:
                    raise
                out.skipped.append(str(SkippedClip(record.sample_id, path, str(e))))
                continue
            p = self._params(record.sample_id)
            per_sample = len(encoded)
            out.positions.append(i)
            out.encoded += encoded
            if self.source == "video":
                out.frames.append(indices)
            out.roi += [np.array([p.y0, p.x0, p.h, p.w], np.int32)] * per_sample
            out.flip += [np.array(int(p.flip), np.int32)] * per_sample
            out.colour += [np.array([p.brightness, p.contrast, p.saturation], np.float32)] * per_sample
        return out

    # ---- the pipeline ---------------------------------------------------------------------------------

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types
        import nvidia.dali.math as dmath

        d, video = self.dataset, self.source == "video"
        gpu = self.device.type == "cuda"
        max_batch = self.batch_size * (1 if video else d.num_frames)
        size = [d.image_size, d.image_size]

        @pipeline_def(batch_size=max_batch, num_threads=self.threads, prefetch_queue_depth=self.prefetch,
                      device_id=(self.device.index or 0) if gpu else None)
        def pipe():
            # One callback for all inputs: DALI calls it up to `prefetch` batches ahead of the consumer.
            dtypes = [types.UINT8, types.INT32, types.INT32, types.FLOAT] + [types.INT32] * video
            encoded, roi, flip, colour, *frames = fn.external_source(
                source=self._next_inputs, num_outputs=len(dtypes), batch=True, dtype=dtypes)
            decode_device = "mixed" if gpu else "cpu"
            if video:
                x = fn.decoders.video(encoded, device=decode_device, frames=frames[0], pad_mode="none")
            else:
                x = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
            # PIL's bilinear resize: a triangle filter widened on downscaling (antialias).
            linear = dict(interp_type=types.INTERP_LINEAR, antialias=True)
            if not video:
                # PIL resizes the width, rounds to uint8, then resizes the height: so do we (the height from
                # the frame's header, on the CPU, as resize's arguments must be).
                height = fn.cast(fn.peek_image_shape(encoded)[0], dtype=types.FLOAT)
                x = fn.resize(x, resize_x=d.image_size, resize_y=height, **linear)
            x = fn.resize(x, size=size, dtype=types.FLOAT, **linear)
            # Crop first, then resize: a resize with a ROI would read pixels outside the box at its borders,
            # where interpolate on the cropped tensor repeats the box's edge.
            x = fn.slice(x, start=roi[0:2], shape=roi[2:4], axes=[1, 2] if video else [0, 1])
            x = fn.resize(x, size=size, interp_type=types.INTERP_LINEAR, antialias=False, dtype=types.FLOAT)
            x = fn.flip(x, horizontal=flip)
            if gpu:
                colour = colour.gpu()
            b, c, s = colour[0], colour[1], colour[2]
            x = dmath.clamp(x * b, 0.0, 255.0)
            spatial = [1, 2] if video else [0, 1]
            m = fn.reductions.mean(x, axes=spatial, keep_dims=True)  # [.., 1, 1, 3]: per frame and channel
            mean_grey = _grey(m, video)
            x = dmath.clamp(x * c + mean_grey * (1.0 - c), 0.0, 255.0)
            grey = _grey(x, video)
            x = dmath.clamp(x * s + grey * (1.0 - s), 0.0, 255.0)
            x = fn.cast(x, dtype=types.UINT8)  # rounds to nearest
            return fn.transpose(x, perm=[0, 3, 1, 2] if video else [2, 0, 1])

        p = pipe()
        p.build()
        return p

    def _next_inputs(self):
        """The external source's callback: the next batch with a good clip, recorded in self._sequence."""
        if self._refeed:
            prep = self._refeed.popleft()
        else:
            while True:
                if self._next >= len(self._todo):
                    raise StopIteration
                prep = self._prepare(self._todo[self._next])
                self._next += 1
                self._sequence.append(prep)
                if prep.positions:
                    break
        inputs = (prep.encoded, prep.roi, prep.flip, prep.colour)
        return inputs + (prep.frames,) if self.source == "video" else inputs

    def _to_batch(self, out, prep: _Prepared) -> dict:
        d = self.dataset
        frames = out[0].as_tensor()
        if self.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            t = torch.empty(frames.shape(), dtype=torch.uint8, device=self.device)
            feed_ndarray(frames, t, cuda_stream=torch.cuda.current_stream(self.device))
        else:
            t = torch.from_numpy(np.array(frames))
        records = [d.split.records[i] for i in prep.positions]
        return {
            "frames": t.view(len(records), d.num_frames, 3, d.image_size, d.image_size),
            "label": torch.tensor([r.label for r in records], dtype=torch.int64),
            "sample_id": torch.tensor([r.sample_id for r in records], dtype=torch.int64),
            "skipped": prep.skipped,
        }

    def _cpu_batch(self, prep: _Prepared) -> dict:
        """The CPU twin's batch: raises the bad file's DataError, or (skip_bad) drops and lists the clip."""
        batch = self.collate([self.dataset[i] for i in prep.batch])
        batch["frames"] = batch["frames"].to(self.device)
        return batch

    def __iter__(self) -> Iterator[dict]:
        self._todo = self._batches()
        self._next = 0
        self._sequence: deque[_Prepared] = deque()  # prepared batches not yet yielded, in order
        self._refeed: deque[_Prepared] = deque()
        if self._pipe is not None and self._ended:
            self._pipe.reset()
        else:  # a pass left midway leaves batches queued in the pipeline: start a fresh one
            self._pipe = None
        self._ended = False
        while True:
            pipe = self._pipeline()
            try:
                out = pipe.run()
                error = None
            except StopIteration:
                self._ended = True
                break
            except DataError:
                raise
            except Exception as e:  # DALI reports a failed decode as an error of the whole batch
                if not any(p.positions for p in self._sequence):
                    raise  # not a batch's data: the pipeline itself failed
                out, error = None, e
            while not self._sequence[0].positions:  # batches with no good clip never went to DALI
                prep = self._sequence.popleft()
                yield self.collate([]) | {"skipped": prep.skipped}
            prep = self._sequence.popleft()
            if error is None:
                yield self._to_batch(out, prep)
                continue
            # The CPU twin's batch is the reference whichever batch DALI failed on: it raises the bad file's
            # DataError, or drops and lists the bad clips (skip_bad); a batch it reads whole is only slower.
            batch = self._cpu_batch(prep)
            if not batch["skipped"] and not self._warned:
                self._warned = True
                warnings.warn(f"DALI failed on a batch that the CPU loader reads; read on the CPU ({error})")
            # The pipeline's state after a failure is unknown: a new one takes the batches already handed out.
            self._pipe = None
            self._refeed = deque(p for p in self._sequence if p.positions)
            yield batch
        for prep in self._sequence:
            yield self.collate([]) | {"skipped": prep.skipped}

    def _pipeline(self):
        if self._pipe is None:
            self._pipe = self._build()
        return self._pipe


def make_dali_loader(split: Split, **kwargs) -> DaliClipLoader:
    """A DaliClipLoader (its keyword arguments); needs nvidia-dali: pip install 'rdfer[dali]'."""
    if not dali_available():
        raise ImportError("the DALI loader needs NVIDIA DALI: pip install 'rdfer[dali]'")
    return DaliClipLoader(split, **kwargs)
