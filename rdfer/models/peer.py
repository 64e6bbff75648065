"""The architecture experiment's peer (rdfer.experiments.architecture): a single-stream multi-instance network
in the style of M3DFEL (Wang et al., CVPR 2023, "Rethinking the Learning Paradigm for Dynamic Facial
Expression Recognition"), the paper's closest peer and the published design RDFER's sequence head descends
from.

M3DFEL samples 16 frames, cuts them into instances of 4 consecutive frames, encodes each instance (an R3D-18
there), and runs a 2-layer BiLSTM, an MHSA gate and a Conv1d pooling of the instances into the bag, which a
linear layer classifies. Here, on RDFER's frame encoder and frame budget: F = synopsis_frames + clips *
clip_length frames (what one RDFER step encodes), one from each of F equal segments (RDFER's synopsis
sampling: random in the segment in training, its centre at test), in instances of 4 consecutive frames; each
instance is encoded frame by frame (TSM within the instance) and averaged, like a detail clip; the sequence
head is RDFER's SequenceHead (BiLSTM -> attention gate -> Conv1d pooling -> classifier), the same as M3DFEL's
MIL head but for DMIN (a LayerNorm here). Not part of the package's network: experiment only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rdfer.config import Config
from rdfer.models.encoder import FrameEncoder
from rdfer.models.rdfer_net import IMAGENET_MEAN, IMAGENET_STD, encode_clips, synopsis_indices
from rdfer.models.sequence import SequenceHead

INSTANCE_LENGTH = 4  # M3DFEL's


class MILPeer(nn.Module):
    def __init__(self, config: Config, classes: Sequence[str]):
        super().__init__()
        self.config, self.classes = config, tuple(classes)
        c = config.model
        self.num_classes, self.num_frames = len(self.classes), config.data.num_frames
        self.frames = c.synopsis_frames + min(c.clips, self.num_classes) * c.clip_length
        if self.frames % INSTANCE_LENGTH or self.num_frames % self.frames:
            raise ValueError(
                f"the peer's {self.frames} frames must divide into instances of {INSTANCE_LENGTH} and divide "
                f"data.num_frames ({self.num_frames})"
            )
        self.instances = self.frames // INSTANCE_LENGTH
        self.encoder = FrameEncoder(c.encoder, c.feature_dim, c.tsm)
        args = (c.feature_dim, c.lstm_hidden, c.lstm_layers, c.heads)
        self.head = SequenceHead(*args, self.instances, self.num_classes, c.dropout)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD), persistent=False)

    def forward(
        self,
        frames: Tensor,
        augment: Tensor | None = None,
        generator: torch.Generator | None = None,
        sample_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """frames uint8 [B, T, 3, H, W] -> the fields rdfer's loss and selectors read; both streams' fields
        name the one stream (sample_ids: unused, accepted like RDFER's)."""
        b, t = frames.shape[:2]
        idx = synopsis_indices(b, t, self.frames, self.training, generator, frames.device)
        idx = idx.view(b, self.instances, INSTANCE_LENGTH)
        feats = encode_clips(self.encoder, frames, idx, INSTANCE_LENGTH, augment, self.mean, self.std)
        inst, video, _ = self.head(feats.mean(dim=2))
        return dict(
            logits=video,
            detail_video_logits=video,
            synopsis_video_logits=video,
            detail_instance_logits=inst,
            synopsis_instance_logits=inst,
            clip_indices=idx,
        )
