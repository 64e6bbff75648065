"""The DALI clip loader: the CPU loader's batches (rdfer.data.loader), decoded and resized by NVIDIA DALI.

What is chosen is chosen by the package's own functions, in Python, so it is identical to the CPU loader by
construction: the clip order (the sampler or the eval order), the frame indices (uniform_indices over
list_frames / count_frames) and each clip's augmentation parameters (clip_augment_params, handed over as the
batch's 'augment' rows, not applied). DALI does the pixel work: decoding (nvJPEG / NVDEC with device="mixed"
on a GPU, libjpeg-turbo / libavcodec on the CPU) and the resize to image_size (linear, antialiased like PIL's
bilinear).

Frame folders: one DALI sample per frame. Videos: one sample per clip, a [T, H, W, 3] sequence decoded at the
chosen indices (VP8/VP9/MJPEG on the CPU; H.264/HEVC/AV1 only with a GPU).

Bad clips: a folder or video that cannot be listed or opened is reported before DALI sees it; a batch whose
decoding fails in DALI is read again by the CPU twin (ClipDataset), which names the bad file, and either
raises that DataError or, with skip_bad, drops and lists the clip, exactly as the CPU loader does. The loader
counts the batches each way (`dali_batches`, `cpu_batches`), so a test can tell that DALI made a batch.

`decode_clips_dali` is the frame cache's GPU filler. DALI is imported here only: `import rdfer` never
imports it.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rdfer.config import DataConfig, RunConfig
from rdfer.data import dali_build
from rdfer.data.frames import count_frames, list_frames
from rdfer.data.loader import EpochShuffleSampler, PositionBatchLoader
from rdfer.data.records import ClipRecord, DataError, Split
from rdfer.data.sampling import uniform_indices


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
    encoded: list[np.ndarray]  # per DALI sample: a file's bytes (a frame folder's distinct picks, in order)
    frames: list[np.ndarray]  # video only: int32 [T] frame indices per clip
    skipped: list[str]
    repeat: list[np.ndarray] = field(default_factory=list)  # folders: per clip, each of its T frames' sample


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"{path}: missing file") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e})") from e


class DaliClipLoader(PositionBatchLoader):
    """Batches as make_loader's (the module doc of rdfer.data.loader), with 'frames' on `device`.

    train: order from `sampler` (default EpochShuffleSampler), last partial batch dropped; eval: `sampler`
    (a list of split indices, e.g. distributed.eval_shard) or the whole split, every clip once, in order.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        train: bool,
        num_frames: int = DataConfig.num_frames,
        image_size: int = DataConfig.image_size,
        seed: int = RunConfig.seed,
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
            raise ValueError(
                f"{split.dataset}/{split.name}: the DALI loader needs all frame folders or all "
                "videos, not a mix"
            )
        super().__init__(
            split,
            batch_size=batch_size,
            train=train,
            num_frames=num_frames,
            image_size=image_size,
            seed=seed,
            skip_bad=skip_bad,
            sampler=sampler,
            epoch=epoch,
            augment=augment,
        )
        self.source = source
        self.device = torch.device(device)
        self.threads = threads or min(len(os.sched_getaffinity(0)), 8)
        self.prefetch = max(1, prefetch)
        self.dali_batches = 0  # batches DALI decoded
        self.cpu_batches = 0  # batches read again by the CPU twin after DALI failed on them
        self._pipe = None
        self._ended = False  # the last pass ran to its end: the pipeline only needs a reset
        self._warned = False

    # ---- inputs (pure Python, the package's own functions) ----------------------------------------------

    def _prepare(self, positions: list[int]) -> _Prepared:
        d = self.dataset
        out = _Prepared(list(positions), [], [], [], [])
        for i in positions:
            path = Path(d.split.records[i].path)
            try:
                if self.source == "frames":
                    if not path.is_dir():
                        count_frames(path)  # raises the CPU loader's own message for a missing clip
                    files = list_frames(path)
                    # Each distinct frame once: a clip shorter than T repeats frames; they are repeated after
                    # decoding (_to_batch), not decoded again.
                    picks, repeat = np.unique(uniform_indices(len(files), d.num_frames), return_inverse=True)
                    encoded = [_read_bytes(files[k]) for k in picks]
                else:
                    out.frames.append(uniform_indices(count_frames(path), d.num_frames).astype(np.int32))
                    encoded = [_read_bytes(path)]
            except DataError as e:
                out.skipped.append(str(d.skipped(i, e)))
                continue
            if self.source == "frames":
                out.repeat.append(len(out.encoded) + repeat.reshape(-1))
            out.positions.append(i)
            out.encoded += encoded
        return out

    # ---- the pipeline ---------------------------------------------------------------------------------

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        d, video = self.dataset, self.source == "video"
        gpu = self.device.type == "cuda"
        max_batch = self.batch_size * (1 if video else d.num_frames)

        @pipeline_def(
            batch_size=max_batch,
            num_threads=self.threads,
            prefetch_queue_depth=self.prefetch,
            device_id=(self.device.index or 0) if gpu else None,
        )
        def pipe():
            # One callback for all inputs: DALI calls it up to `prefetch` batches ahead of the consumer.
            dtypes = [types.UINT8] + [types.INT32] * video
            encoded, *frames = fn.external_source(
                source=self._next_inputs, num_outputs=len(dtypes), batch=True, dtype=dtypes
            )
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
            x = fn.resize(x, size=[d.image_size, d.image_size], dtype=types.UINT8, **linear)
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
        return (prep.encoded, prep.frames) if self.source == "video" else (prep.encoded,)

    def _to_batch(self, out, prep: _Prepared) -> dict:
        d = self.dataset
        frames = out[0].as_tensor()
        if self.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            t = torch.empty(frames.shape(), dtype=torch.uint8, device=self.device)
            feed_ndarray(frames, t, cuda_stream=torch.cuda.current_stream(self.device))
        else:
            t = torch.from_numpy(np.array(frames))
        if prep.repeat:  # each clip's distinct frames back to its T frames
            t = t.index_select(0, torch.from_numpy(np.concatenate(prep.repeat)).to(t.device))
        t = t.view(len(prep.positions), d.num_frames, 3, d.image_size, d.image_size)
        self.dali_batches += 1
        return self.batch_of(prep.positions, t) | {"skipped": prep.skipped}

    def _cpu_batch(self, prep: _Prepared) -> dict:
        """The CPU twin's batch: raises the bad file's DataError, or (skip_bad) drops and lists the clip."""
        batch = self.collate([self.dataset[i] for i in prep.batch])
        batch["frames"] = batch["frames"].to(self.device)
        self.cpu_batches += 1
        return batch

    def __iter__(self) -> Iterator[dict]:
        self._todo = self.position_batches()
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
                yield self.collate.empty(self._sequence.popleft().skipped)
            prep = self._sequence.popleft()
            if error is None:
                yield self._to_batch(out, prep)
                continue
            # The CPU twin's batch is the reference whichever batch DALI failed on: it raises the bad file's
            # DataError, or drops and lists the bad clips (skip_bad); a batch it reads whole is only slower.
            batch = self._cpu_batch(prep)
            if not batch["skipped"] and not self._warned:
                self._warned = True
                warnings.warn(
                    f"DALI failed on a batch that the CPU loader reads; read on the CPU ({error})",
                    stacklevel=2,
                )
            # The pipeline's state after a failure is unknown: a new one takes the batches already handed out.
            self._pipe = None
            self._refeed = deque(p for p in self._sequence if p.positions)
            yield batch
        for prep in self._sequence:
            yield self.collate.empty(prep.skipped)

    def _pipeline(self):
        if self._pipe is None:
            self._pipe = self._build()
        return self._pipe


_SAID: set[str] = set()


def make_dali_loader(split: Split, **kwargs) -> DaliClipLoader:
    """A DaliClipLoader (its keyword arguments); needs nvidia-dali: pip install 'rdfer[dali-cu12]' or
    'rdfer[dali-cu13]', the one of torch's CUDA. The first loader says when the installed DALI does not match
    torch's CUDA (once per process)."""
    if not dali_available():
        raise ImportError(
            f"the DALI loader needs NVIDIA DALI: pip install 'rdfer[{dali_build.extra_for_torch()}]'"
        )
    problem = dali_build.check()
    if problem and problem not in _SAID:
        _SAID.add(problem)
        print(f"DALI loader: {problem}", file=sys.stderr)
    return DaliClipLoader(split, **kwargs)


def decode_clips_dali(
    paths: list[Path],
    num_frames: int,
    size: int,
    device: torch.device | str,
    threads: int | None = None,
    batch_size: int = 16,
) -> Iterator:
    """Each clip of `paths`, in order, decoded and resized by DALI on `device`: uint8 [T, 3, size, size] on
    the CPU, or the message of its DataError (the frame cache's GPU filler, as loader.decode_clips)."""
    split = Split("frame cache", "fill", (), [ClipRecord(k, str(p), Path(p), 0) for k, p in enumerate(paths)])
    loader = make_dali_loader(
        split,
        batch_size=batch_size,
        train=False,
        num_frames=num_frames,
        image_size=size,
        skip_bad=True,
        device=device,
        threads=threads,
    )
    for positions, batch in zip(loader.position_batches(), loader, strict=True):
        good = dict(zip(batch["sample_id"].tolist(), batch["frames"].cpu(), strict=True))
        problems = iter(batch["skipped"])  # the bad clips' messages, in batch order
        for k in positions:
            yield good[k] if k in good else next(problems)
