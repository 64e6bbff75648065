"""The sequence head of each stream (docs/method.md §2): BiLSTM -> temporal attention gate -> instance
classifier, and Conv1d pooling of the instances into the bag (video) feature, which the same classifier
classifies."""

from __future__ import annotations

from torch import Tensor, nn

from rdfer.ops.attention_gate import attention_gate


class AttentionGate(nn.Module):
    """x * sigmoid(LayerNorm(MHSA(x))): the QKV projection is a matmul here; the rest is rdfer.ops."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must divide by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        return attention_gate(q, k, v, x, self.norm.weight, self.norm.bias, self.norm.eps)


class SequenceHead(nn.Module):
    def __init__(
        self,
        in_dim: int,
        hidden: int,
        layers: int,
        heads: int,
        instances: int,
        classes: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, layers, batch_first=True, bidirectional=True)
        self.gate = AttentionGate(2 * hidden, heads)
        self.pool = nn.Conv1d(instances, 1, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, classes)
        self.out_dim = 2 * hidden

    def forward(
        self, feats: Tensor, channel_attention: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """feats [B, L, in_dim] -> instance logits [B, L, C], video logits [B, C], bag feature [B, 2*hidden].

        channel_attention [B, 2*hidden] (the detail stream's, from the synopsis bag) scales the LSTM output
        before the gate."""
        x, _ = self.lstm(feats)
        if channel_attention is not None:
            x = x * channel_attention.unsqueeze(1)
        x = self.gate(x)
        bag = self.pool(x).squeeze(1)
        return self.classifier(self.dropout(x)), self.classifier(self.dropout(bag)), bag
