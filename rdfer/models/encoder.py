"""Frame encoders (docs/method.md §2): ResNet-18/50 in torchvision's state-dict layout, a small CNN for CPU
presets, and the temporal shift (TSM) inside groups of consecutive frames.

The ResNets are written here (not imported from torchvision, which has no CPU wheel to pin) with torchvision's
module names, so ImageNet or face-recognition weights in that layout load with strict key checking.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from rdfer.errors import CheckpointError, ConfigError


def temporal_shift(x: Tensor, group: int, fold_div: int = 8) -> Tensor:
    """Shift 1/fold_div of the channels one frame back and 1/fold_div one frame forward, within each group of
    `group` consecutive frames of x [N*group, C, H, W] (zeros enter at the group's ends)."""
    nt, c, h, w = x.shape
    x = x.view(nt // group, group, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class _Shift(nn.Module):
    """Residual-branch shift placed before a block's first conv; `group` is set per call by the encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.group = 1

    def forward(self, x: Tensor) -> Tensor:
        return temporal_shift(x, self.group) if self.group > 1 else x


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.shift = _Shift()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.shift(x))))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.shift = _Shift()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.shift(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block: type, layers: list[int]):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(block, 64, layers[0], 1)
        self.layer2 = self._layer(block, 128, layers[1], 2)
        self.layer3 = self._layer(block, 256, layers[2], 2)
        self.layer4 = self._layer(block, 512, layers[3], 2)
        self.out_dim = 512 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class SmallCNN(nn.Module):
    """A 4x4 stride-4 patch stem and two stride-2 conv blocks: a frame encoder that trains on 2 CPU cores in
    minutes (CPU presets). The patch stem costs half of a stride-2 stem's time on a 2-core CPU."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        blocks, cin = [], 3
        for i, w in enumerate(widths):
            conv = nn.Conv2d(cin, w, 4, 4, bias=False) if i == 0 else nn.Conv2d(cin, w, 3, 2, 1, bias=False)
            blocks.append(nn.ModuleDict(dict(shift=_Shift(), conv=conv, bn=nn.BatchNorm2d(w))))
            cin = w
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = cin

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = torch.relu(b["bn"](b["conv"](b["shift"](x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class FrameEncoder(nn.Module):
    """[N, 3, H, W] normalised frames -> [N, feature_dim]; TSM shifts within groups of `group` frames."""

    def __init__(self, name: str, feature_dim: int, tsm: bool):
        super().__init__()
        if name == "resnet18":
            self.backbone = ResNet(BasicBlock, [2, 2, 2, 2])
        elif name == "resnet50":
            self.backbone = ResNet(Bottleneck, [3, 4, 6, 3])
        elif name == "small":
            self.backbone = SmallCNN()
        else:
            raise ValueError(f"unknown encoder {name!r}: resnet18, resnet50 or small")
        self.tsm = tsm
        dim = self.backbone.out_dim
        self.proj = nn.Identity() if dim == feature_dim else nn.Linear(dim, feature_dim)
        self.out_dim = feature_dim

    def forward(self, x: Tensor, group: int = 1) -> Tensor:
        for m in self.backbone.modules():
            if isinstance(m, _Shift):
                m.group = group if self.tsm else 1
        return self.proj(self.backbone(x))


# Classifier heads of the weights people start from: torchvision's ImageNet `fc`, and the `feature` embedding
# plus `fc` of the field's MS-Celeb-1M ResNet-18 (ijba_res18_naive.pth.tar).
HEADS = ("fc.", "feature.")


def load_pretrained(encoder: FrameEncoder, path: str | Path) -> list[str]:
    """Load a torchvision-layout state dict into encoder.backbone, strictly.

    Accepts a plain state dict or {'state_dict': ...} (as ijba_res18_naive.pth.tar is distributed), strips a
    'module.' prefix (DataParallel), and leaves out classifier heads (HEADS). Any other missing, unexpected or
    mis-shaped key is an error that lists them all. Returns the keys left out. Loads with weights_only=True:
    a file holding anything but tensors and plain containers is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.pretrained {path}: no such file (rdfer never downloads weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle refusals, truncation and foreign formats alike
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"model.pretrained {path}: not loadable as tensors and plain containers ({first})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"model.pretrained {path}: not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    left_out = sorted(k for k in state if k.startswith(HEADS))
    state = {k: v for k, v in state.items() if not k.startswith(HEADS)}
    own = encoder.backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        lines = [f"{path} does not fit the {type(encoder.backbone).__name__} encoder:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                lines.append(
                    f"  {title} ({len(keys)}): " + ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else "")
                )
        raise CheckpointError(" ".join(lines))
    encoder.backbone.load_state_dict(state, strict=True)
    return left_out
