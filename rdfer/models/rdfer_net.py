"""RDFER, the dual-stream hierarchical network (SPEC §2).

frames uint8 [B, T, 3, H, W] -> synopsis stream over Ls frames -> instance probabilities -> key positions ->
K clips of L frames gathered around them -> detail stream (with the synopsis bag as channel attention) ->
video logits. The gathers and index computations go through rdfer.ops (the C++/CUDA op or its twin).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rdfer.config import Config, ModelConfig
from rdfer.data.sampling import synopsis_indices
from rdfer.models.encoder import FrameEncoder, load_pretrained
from rdfer.models.sequence import SequenceHead
from rdfer.ops.resample import clip_indices, gather_clips, key_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RDFER(nn.Module):
    """RDFER(config) with a whole Config (classes and T from its data section), or
    RDFER(model_config, num_classes, num_frames)."""

    def __init__(self, config: Config | ModelConfig, num_classes: int | None = None, num_frames: int = 64):
        super().__init__()
        if isinstance(config, Config):
            if num_classes is None:
                from rdfer.data.datasets import classes_of

                num_classes = len(classes_of(config.data.dataset))
            num_frames, config = config.data.num_frames, config.model
        if num_classes is None:
            raise ValueError("num_classes is required with a ModelConfig")
        c = self.config = config
        self.num_classes, self.num_frames = num_classes, num_frames
        if c.clips > num_classes:
            raise ValueError(f"model.clips ({c.clips}) cannot exceed the number of classes ({num_classes})")
        self.synopsis_encoder = FrameEncoder(c.encoder, c.feature_dim, c.tsm)
        self.detail_encoder = FrameEncoder(c.encoder, c.feature_dim, c.tsm)
        if c.pretrained:
            for enc in (self.synopsis_encoder, self.detail_encoder):
                load_pretrained(enc, c.pretrained)
        args = (c.feature_dim, c.lstm_hidden, c.lstm_layers, c.heads)
        self.synopsis = SequenceHead(*args, c.synopsis_frames, num_classes, c.dropout)
        self.detail = SequenceHead(*args, c.clips, num_classes, c.dropout)
        self.channel_attention = nn.Linear(self.synopsis.out_dim, self.detail.out_dim)
        self.position_head = nn.Linear(self.synopsis.out_dim, 2 * c.clips) if c.learned_positions else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD), persistent=False)

    def _encode(self, encoder: FrameEncoder, frames: Tensor, indices: Tensor, group: int) -> Tensor:
        """Gather frames at indices [B, K, L], normalise, encode: -> [B, K, L, feature_dim]."""
        dtype = torch.get_autocast_dtype("cuda") if frames.is_cuda and torch.is_autocast_enabled("cuda") else None
        x = gather_clips(frames, indices, self.mean, self.std, out_dtype=dtype)
        b, k, l = indices.shape
        return encoder(x.flatten(0, 2), group=group).view(b, k, l, -1)

    def forward(self, frames: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, T, 3, H, W], got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        c = self.config
        syn_idx = synopsis_indices(b, t, c.synopsis_frames, self.training, generator).to(frames.device)
        syn_feats = self._encode(self.synopsis_encoder, frames, syn_idx.unsqueeze(1), group=4)[:, 0]
        syn_inst, syn_video, syn_bag = self.synopsis(syn_feats)

        with torch.no_grad():
            keys, _ = key_positions(syn_inst.detach().float().softmax(-1), c.clips, t)
            keys = keys.sort(dim=1, stable=True).values  # clips in time order for the detail BiLSTM
        out = {}
        if self.position_head is not None:
            raw = self.position_head(syn_bag).view(b, 2, c.clips)
            predicted = ((torch.tanh(raw[:, 0]) + 1) * 0.5 * (t - 1)).sort(dim=1).values
            strides = c.stride * torch.exp(-raw[:, 1].abs())
            out["predicted_positions"] = predicted
            centers = predicted.detach()
        else:
            centers, strides = keys, torch.full_like(keys, c.stride)
        det_idx = clip_indices(centers, strides.detach(), c.clip_length, t)
        det_feats = self._encode(self.detail_encoder, frames, det_idx, group=c.clip_length).mean(dim=2)
        gate = torch.sigmoid(self.channel_attention(syn_bag))
        det_inst, det_video, _ = self.detail(det_feats, channel_attention=gate)

        logits = det_video if c.output == "detail" else 0.5 * (det_video + syn_video)
        out.update(
            logits=logits,
            detail_video_logits=det_video,
            synopsis_video_logits=syn_video,
            detail_instance_logits=det_inst,
            synopsis_instance_logits=syn_inst,
            key_positions=keys,
            synopsis_indices=syn_idx,
            clip_indices=det_idx,
        )
        return out
