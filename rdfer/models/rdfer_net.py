"""RDFER, the dual-stream hierarchical network (docs/method.md).

frames uint8 [B, T, 3, H, W] -> synopsis stream over Ls frames -> instance probabilities -> key positions ->
K clips of L frames gathered around them -> detail stream (with the synopsis bag as channel attention) ->
video logits. The gathers and index computations go through rdfer.ops (the C++/CUDA op or its twin).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from rdfer import checkpoint
from rdfer.config import Config, from_dict
from rdfer.models import placement
from rdfer.models.encoder import FrameEncoder, load_pretrained
from rdfer.models.sequence import SequenceHead
from rdfer.ops.resample import clip_indices, gather_clips, gather_clips_augmented, key_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def synopsis_indices(
    batch: int,
    T: int = 64,
    L: int = 16,
    train: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Indices [batch, L] (int64) of the synopsis stream's L frames among the T loaded ones.

    The T frames are cut into L segments of T/L frames. Training takes a random frame inside each segment
    (offset drawn with `generator`, else the default generator of `device`, independently per video and
    segment); evaluation takes the segment centres floor((i + 0.5) * T / L), the same for every video.
    """
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    if L <= 0 or T <= 0 or T % L != 0:
        raise ValueError(f"synopsis sampling needs T divisible by L (T={T}, L={L})")
    seg = T // L
    starts = torch.arange(L, dtype=torch.int64, device=device) * seg
    if not train:
        # seg is an integer, so floor((i + 0.5) * seg) == i * seg + seg // 2.
        return (starts + seg // 2).expand(batch, L).contiguous()
    # Drawn on the generator's own device (a CUDA generator cannot fill a CPU tensor), then moved.
    draw_device = generator.device if generator is not None else device
    offsets = torch.randint(0, seg, (batch, L), generator=generator, device=draw_device, dtype=torch.int64)
    return starts + offsets.to(starts.device)


class RDFER(nn.Module):
    """RDFER(config, classes): the network of a Config (its model section and data.num_frames) for these
    class names. It carries both (`model.config`, `model.classes`), so a checkpoint rebuilds it alone.

    K = min(model.clips, number of classes) clips: key positions come from the K classes that peak highest,
    so a dataset with fewer classes than model.clips uses fewer clips."""

    def __init__(self, config: Config, classes: Sequence[str]):
        super().__init__()
        if not isinstance(config, Config):
            raise TypeError(
                f"RDFER takes a rdfer.Config (rdfer.load_config(...)), got {type(config).__name__}"
            )
        if isinstance(classes, str) or len(classes) < 2:
            raise ValueError(f"classes must be a sequence of at least 2 class names, got {classes!r}")
        self.config, self.classes = config, tuple(classes)
        c = config.model
        self.num_classes, self.num_frames = len(self.classes), config.data.num_frames
        self.clips = min(c.clips, self.num_classes)
        # detail_clips=off (synopsis only) builds no detail stream: it costs nothing, not even parameters.
        self.has_detail = c.detail_clips != "off"
        self.synopsis_encoder = FrameEncoder(c.encoder, c.feature_dim, c.tsm)
        encoders = [self.synopsis_encoder]
        if self.has_detail:
            self.detail_encoder = FrameEncoder(c.encoder, c.feature_dim, c.tsm)
            encoders.append(self.detail_encoder)
        if c.pretrained:
            for enc in encoders:
                left_out = load_pretrained(enc, c.pretrained)
            heads = f"; left out its head ({', '.join(left_out)})" if left_out else ""
            print(f"model.pretrained: loaded {c.pretrained} into the frame encoders{heads}", file=sys.stderr)
        args = (c.feature_dim, c.lstm_hidden, c.lstm_layers, c.heads)
        self.synopsis = SequenceHead(*args, c.synopsis_frames, self.num_classes, c.dropout)
        if self.has_detail:
            self.detail = SequenceHead(*args, self.clips, self.num_classes, c.dropout)
            self.channel_attention = nn.Linear(self.synopsis.out_dim, self.detail.out_dim)
        self.position_head = nn.Linear(self.synopsis.out_dim, 2 * self.clips) if c.learned_positions else None
        # The architecture experiment's apex-clips oracle: (sample_ids, training, T) -> centres [B, K]. Never
        # set by the package; when set, it replaces the clip placement in training and at test.
        self.clip_placer = None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD), persistent=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> RDFER:
        """The model of a checkpoint written by rdfer.train (last.pt or best.pt), in eval mode on `device`."""
        state = checkpoint.load(Path(path))
        model = cls(from_dict(state["config"]), state["classes"])
        model.load_state_dict(state["model"])
        return model.to(device).eval()

    def _encode(
        self, encoder: FrameEncoder, frames: Tensor, indices: Tensor, group: int, augment: Tensor | None
    ) -> Tensor:
        return encode_clips(encoder, frames, indices, group, augment, self.mean, self.std)

    def forward(
        self,
        frames: Tensor,
        augment: Tensor | None = None,
        generator: torch.Generator | None = None,
        sample_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """frames uint8 [B, T, 3, H, W]; augment: float32 [B, 8], each clip's training augmentation
        (rdfer.ops.augment.params_to_tensor), applied only to the frames the two streams gather. sample_ids
        [B] (the loader's) are read only by the experiment's clip placements (random at test, apex)."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, T, 3, H, W], got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        c, k = self.config.model, self.clips
        syn_idx = synopsis_indices(b, t, c.synopsis_frames, self.training, generator, frames.device)
        syn_feats = self._encode(self.synopsis_encoder, frames, syn_idx.unsqueeze(1), 4, augment)[:, 0]
        syn_inst, syn_video, syn_bag = self.synopsis(syn_feats)

        with torch.no_grad():
            probs = syn_inst.detach().float().softmax(-1)
            keys, _ = key_positions(probs, k, t)
            keys = keys.sort(dim=1, stable=True).values  # clips in time order for the detail BiLSTM
        out = dict(synopsis_video_logits=syn_video, synopsis_instance_logits=syn_inst)
        out.update(key_positions=keys, synopsis_indices=syn_idx)
        if not self.has_detail:
            # Synopsis only: the synopsis stream predicts; the detail keys repeat it so that the loss, the
            # selectors and prediction read the same fields.
            out.update(logits=syn_video, detail_video_logits=syn_video, detail_instance_logits=syn_inst)
            return out
        centers, strides = self._place(keys, probs, syn_bag, t, (sample_ids, generator), out)
        det_idx = clip_indices(centers, strides.detach(), c.clip_length, t)
        det_feats = self._encode(self.detail_encoder, frames, det_idx, c.clip_length, augment).mean(dim=2)
        gate = torch.sigmoid(self.channel_attention(syn_bag))
        det_inst, det_video, _ = self.detail(det_feats, channel_attention=gate)

        logits = det_video if c.output == "detail" else 0.5 * (det_video + syn_video)
        out.update(
            logits=logits,
            detail_video_logits=det_video,
            detail_instance_logits=det_inst,
            clip_centers=centers,
            clip_indices=det_idx,
        )
        return out

    def _place(
        self,
        keys: Tensor,
        probs: Tensor,
        syn_bag: Tensor,
        t: int,
        draw: tuple[Tensor | None, torch.Generator | None],
        out: dict,
    ) -> tuple[Tensor, Tensor]:
        """The detail clips' centres and strides [B, K]: the key positions (the default), the learned head's,
        the experiment's placer's, or model.detail_clips' baseline placement."""
        c, (b, k), (sample_ids, generator) = self.config.model, keys.shape, draw
        if self.position_head is not None:
            raw = self.position_head(syn_bag).view(b, 2, k)
            predicted = ((torch.tanh(raw[:, 0]) + 1) * 0.5 * (t - 1)).sort(dim=1).values
            out["predicted_positions"] = predicted
            return predicted.detach(), c.stride * torch.exp(-raw[:, 1].abs())
        if self.clip_placer is not None:
            centers = self.clip_placer(sample_ids, self.training, t).to(keys.device)
        elif c.detail_clips == "key":
            centers = keys
        elif c.detail_clips == "top":
            centers = placement.top_class_centers(probs, k, t)
        else:
            centers = placement.centers(
                c.detail_clips, b, k, t, self.training, sample_ids, generator, keys.device
            )
        return centers, torch.full_like(centers, c.stride)


def encode_clips(
    encoder: FrameEncoder,
    frames: Tensor,
    indices: Tensor,
    group: int,
    augment: Tensor | None,
    mean: Tensor,
    std: Tensor,
) -> Tensor:
    """Gather frames at indices [B, K, L] (augmenting each clip by its row of `augment` when given),
    normalise, encode: -> [B, K, L, feature_dim]."""
    dtype = torch.get_autocast_dtype("cuda") if frames.is_cuda and torch.is_autocast_enabled("cuda") else None
    if augment is None:
        x = gather_clips(frames, indices, mean, std, out_dtype=dtype)
    else:
        x = gather_clips_augmented(frames, indices, augment, mean, std, out_dtype=dtype)
    b, k, length = indices.shape
    return encoder(x.flatten(0, 2), group=group).view(b, k, length, -1)
