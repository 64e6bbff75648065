"""The configuration schema: nested dataclasses, loaded from YAML plus `section.key=value` overrides.

Defaults are the paper's (docs/method.md) except where a field says "package's choice". Unknown keys and
values of the wrong type are errors that name the key; nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rdfer.errors import ConfigError

PACKAGED = Path(__file__).parent / "configs"
DEVICE_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?")  # run.device and every --device


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # dfew | ferv39k | mafw | manifest | synthetic
    root: str | None = None  # dataset root (the manifest CSV for "manifest"); synthetic: None = cache folder
    fold: int = 1
    source: str | None = None  # frames | video; None = the dataset's default
    options: dict = field(default_factory=dict)  # extra reader options, e.g. {split_dir: anno} for MAFW
    num_frames: int = 64  # T: frames loaded per clip
    image_size: int = 112
    crop_scale: float = 0.08  # smallest area share of the random resized crop (training)
    color_jitter: float = 0.4  # brightness, contrast, saturation factors in [1 - j, 1 + j] (training)
    batch_size: int = 128  # global batch
    workers: int | None = None  # None: min(cores, 8)
    loader: str = "auto"  # auto | dali | torch
    skip_bad: bool = False
    # Package's choice: the frame cache (rdfer.data.cache). Each clip is decoded once (by DALI on a GPU when
    # data.loader allows it, else by the CPU loader's workers) into a store on disk ($RDFER_FRAME_CACHE, else
    # $RDFER_CACHE/frames; N * T * 3 * size^2 bytes, reused by later epochs, folds and runs); batches are then
    # gathered from it. auto: on the GPU when the split fits beside training's memory, else host memory, else
    # the disk store itself; decoding every epoch when the disk lacks room. device: on the GPU (a CUDA run);
    # host: in host memory (pinned buffers feed the GPU); disk: read from the store's memory map;
    # off: decode every epoch (DALI or the CPU loader, data.loader).
    cache: str = "auto"
    synth_preset: str = "quick"  # SynthDFER, when dataset is synthetic and root is None
    synth_noise: float = 0.2
    synth_noise_kind: str = "symmetric"  # symmetric | pairs
    synth_seed: int = 0


@dataclass
class ModelConfig:
    encoder: str = "resnet18"  # resnet18 | resnet50 | small
    pretrained: str | None = None  # local torchvision-layout state dict for the frame encoders
    tsm: bool = False
    feature_dim: int = 512
    lstm_hidden: int = 512
    lstm_layers: int = 2
    heads: int = 8
    synopsis_frames: int = 16  # Ls
    clips: int = 4  # K
    clip_length: int = 4  # L
    stride: float = 4.0  # frames between a clip's frames on the T-frame timeline
    learned_positions: bool = False  # package's choice: off (the index path carries no gradient to it)
    output: str = "detail"  # detail | average (of detail and synopsis video logits)
    # Package's choice, for the architecture experiment (rdfer.experiments.architecture): where the detail
    # stream's K clips go. key: the key positions (the paper's re-sampling: one clip per class, K classes);
    # top: all K on the most probable instances of the class that peaks highest; uniform: evenly spaced;
    # random: drawn per step in training, fixed per clip at test; off: no detail stream, the synopsis stream
    # predicts.
    detail_clips: str = "key"
    dropout: float = 0.0


@dataclass
class RobustConfig:
    """Label-noise robustness (docs/method.md §3). Package's choice, by the noise experiment's numbers: on,
    with the `rdfer` method: the early-learning regularisation term on every sample, and a clean/suspect
    split of the mean per-sample loss that lists the suspects (and, with exclude, leaves them out). The
    methods it was measured against live with the experiment (rdfer.experiments.baselines), not here."""

    enabled: bool = True  # false: plain (label-smoothed) cross-entropy, every weight 1; suspects still listed
    method: str = "rdfer"  # the one method of the training core
    warmup: float = 0.2  # share of the epochs before the split decides (and, with exclude, sets weights)
    exclude: bool = False  # the split's suspects leave the loss (noisy_weight); false: they are only listed
    noisy_weight: float = 0.0  # loss weight of a sample judged noisy
    weight_cap: float = 2.0  # a batch's weights are scaled to sum to B, by at most this factor
    # early-learning regularisation: the published CIFAR-10 values
    elr_lambda: float = 3.0  # coefficient of the loss term lambda * mean log(1 - <p, t>); 0: no term
    elr_beta: float = 0.7  # momentum of the per-sample target EMA


@dataclass
class OptimConfig:
    epochs: int = 100
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 10
    min_lr: float = 5e-6
    label_smoothing: float = 0.1
    synopsis_weight: float = 0.1
    instance_weight: float = 0.1
    position_weight: float = 0.1
    grad_clip: float | None = None
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops


@dataclass
class RunConfig:
    seed: int = 42
    out: str = "runs/rdfer"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    channels_last: str = "auto"  # auto (on CUDA) | on | off
    eval_every: int = 1


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CHOICES = {
    ("data", "dataset"): ("dfew", "ferv39k", "mafw", "manifest", "synthetic"),
    ("data", "source"): (None, "frames", "video"),
    ("data", "loader"): ("auto", "dali", "torch"),
    ("data", "cache"): ("auto", "off", "device", "host", "disk"),
    ("data", "synth_noise_kind"): ("symmetric", "pairs"),
    ("model", "encoder"): ("resnet18", "resnet50", "small"),
    ("model", "output"): ("detail", "average"),
    ("model", "detail_clips"): ("key", "top", "uniform", "random", "off"),
    ("robust", "method"): ("rdfer",),
    ("run", "amp"): ("auto", "bf16", "off"),
    ("run", "channels_last"): ("auto", "on", "off"),
}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    hint = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing), {})  # noqa: S307
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted on/off (yes/no) as a bool
            return "on" if value else "off"
    elif hint is dict:
        if isinstance(value, dict):
            return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _merge(cfg: Config, tree: dict, origin: str) -> None:
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: the config must be a mapping of sections, got {type(tree).__name__}")
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    for name, body in tree.items():
        if name not in sections:
            raise ConfigError(f"{origin}: unknown section {name!r}; sections are {sorted(sections)}")
        section = getattr(cfg, name)
        if not isinstance(body, dict):
            raise ConfigError(f"{origin}: section {name!r} must be a mapping")
        fields = {f.name: f for f in dataclasses.fields(section)}
        hints = typing.get_type_hints(type(section))
        for key, value in body.items():
            if key not in fields:
                raise ConfigError(f"{origin}: unknown key {name}.{key}; {name} has {sorted(fields)}")
            setattr(section, key, _coerce(value, hints[key], f"{origin}: {name}.{key}"))


def _check_choices(cfg: Config) -> None:
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"{section}.{key} must be one of {[c for c in choices if c]}, got {value!r}")


def validate(cfg: Config) -> Config:
    _check_choices(cfg)
    m, d, o, r, run = cfg.model, cfg.data, cfg.optim, cfg.robust, cfg.run
    checks = [
        (m.synopsis_frames >= 1, f"model.synopsis_frames must be at least 1, got {m.synopsis_frames}"),
        (
            m.heads >= 1 and m.lstm_layers >= 1 and m.lstm_hidden >= 1 and m.feature_dim >= 1,
            "model.heads, model.lstm_layers, model.lstm_hidden and model.feature_dim must be at least 1",
        ),
        (
            d.num_frames > 0 and m.synopsis_frames >= 1 and d.num_frames % m.synopsis_frames == 0,
            f"data.num_frames ({d.num_frames}) must be a positive multiple of model.synopsis_frames "
            f"({m.synopsis_frames})",
        ),
        (0 < d.crop_scale <= 1, f"data.crop_scale must be in (0, 1], got {d.crop_scale}"),
        (0 <= d.color_jitter < 1, f"data.color_jitter must be in [0, 1), got {d.color_jitter}"),
        (d.image_size >= 16, f"data.image_size must be at least 16, got {d.image_size}"),
        (d.batch_size >= 1, f"data.batch_size must be at least 1, got {d.batch_size}"),
        (
            d.workers is None or d.workers >= 0,
            f"data.workers must be 0 or more (or null: automatic), got {d.workers}",
        ),
        (
            m.heads >= 1 and (2 * m.lstm_hidden) % m.heads == 0,
            f"2 * model.lstm_hidden ({2 * m.lstm_hidden}) must divide by model.heads ({m.heads})",
        ),
        (m.clips >= 1 and m.clip_length >= 1, "model.clips and model.clip_length must be at least 1"),
        (
            not m.tsm or m.synopsis_frames % 4 == 0,
            f"model.tsm shifts within groups of 4 frames: model.synopsis_frames ({m.synopsis_frames}) must "
            "divide by 4",
        ),
        (m.stride > 0, f"model.stride must be positive, got {m.stride}"),
        (
            m.detail_clips == "key" or not m.learned_positions,
            f"model.learned_positions learns key positions: it needs model.detail_clips=key, not "
            f"{m.detail_clips!r}",
        ),
        (0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}"),
        (o.epochs >= 1, f"optim.epochs must be at least 1, got {o.epochs}"),
        (o.lr > 0 and o.min_lr >= 0, "optim.lr must be positive and optim.min_lr non-negative"),
        (0 <= o.label_smoothing < 1, f"optim.label_smoothing must be in [0, 1), got {o.label_smoothing}"),
        (o.max_bad_steps >= 1, "optim.max_bad_steps must be at least 1"),
        (o.warmup_epochs >= 0, f"optim.warmup_epochs must be 0 or more, got {o.warmup_epochs}"),
        (
            o.grad_clip is None or o.grad_clip > 0,
            f"optim.grad_clip must be positive (or null), got {o.grad_clip}",
        ),
        (run.eval_every >= 1, f"run.eval_every must be at least 1, got {run.eval_every}"),
        (
            bool(DEVICE_NAMES.fullmatch(run.device)),
            f"run.device must be auto, cpu, cuda or cuda:N, got {run.device!r}",
        ),
        (0 <= d.synth_noise < 1, f"data.synth_noise must be in [0, 1), got {d.synth_noise}"),
        (1 <= d.fold <= 5, f"data.fold must be in 1..5, got {d.fold}"),
        *_robust_checks(r),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return cfg


def _robust_checks(r: RobustConfig) -> list[tuple[bool, str]]:
    return [
        (0 <= r.warmup <= 1, f"robust.warmup is a share of epochs in [0, 1], got {r.warmup}"),
        (r.elr_lambda >= 0, f"robust.elr_lambda must be 0 or more, got {r.elr_lambda}"),
        (0 <= r.elr_beta < 1, f"robust.elr_beta must be in [0, 1), got {r.elr_beta}"),
        (0 <= r.noisy_weight <= 1, f"robust.noisy_weight must be in [0, 1], got {r.noisy_weight}"),
        (r.weight_cap >= 1, f"robust.weight_cap must be at least 1, got {r.weight_cap}"),
    ]


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from None


def parse_override(text: str) -> dict:
    """'optim.lr=1e-3' -> {'optim': {'lr': 0.001}} (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: the value is not valid YAML") from None
    return {parts[0]: {parts[1]: value}}


def resolve_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        return p
    packaged = PACKAGED / f"{name_or_path}.yaml"
    if not packaged.exists():
        names = sorted(f.stem for f in PACKAGED.glob("*.yaml"))
        raise ConfigError(
            f"no config file {p} and no packaged config named {name_or_path!r} (packaged: {names})"
        )
    return packaged


def load_config(source: str | Path | dict | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Defaults <- a YAML file or packaged name (e.g. "quick", "dfew") or a dict <- overrides."""
    cfg = Config()
    if isinstance(source, dict):
        _merge(cfg, source, "config")
    elif source is not None:
        path = resolve_path(source)
        _merge(cfg, _read_yaml(path), str(path))
    for text in overrides:
        _merge(cfg, parse_override(text), f"override {text!r}")
    return validate(cfg)


# Keys that checkpoints of earlier versions hold and this one dropped; none changes what a model computes
# (data.cache_frames chose where decoded frames were kept; the robust keys tuned methods now measured only by
# the noise experiment), so a checkpoint is read without them rather than refused.
RETIRED = {
    "data": {"cache_frames"},
    "robust": {
        "warmup_corr",
        "window",
        "ramp",
        "max_share",
        "keep_hard",
        "a_min",
        "s_max",
        "momentum",
        "relabel",
        "relabel_margin",
        "use_ema",
    },
}


def from_dict(tree: dict) -> Config:
    cfg = Config()
    if isinstance(tree, dict):
        tree = {
            name: {k: v for k, v in section.items() if k not in RETIRED.get(name, ())}
            if isinstance(section, dict)
            else section
            for name, section in tree.items()
        }
        robust = tree.get("robust")
        if isinstance(robust, dict) and robust.get("method") not in (None, "rdfer"):
            # A retired method (small_loss, agreement, elr): the model reads the same; resuming such a run is
            # refused where its selector state does not load.
            tree["robust"] = {**robust, "method": "rdfer"}
    _merge(cfg, tree, "checkpoint config")
    return validate(cfg)


def diff(a: Config, b: Config, sections=("data", "model", "robust", "optim")) -> list[str]:
    """Keys whose values differ, as 'section.key: a != b'."""
    out = []
    da, db = a.to_dict(), b.to_dict()
    for s in sections:
        for k in da[s]:
            if da[s][k] != db[s][k]:
                out.append(f"{s}.{k}: {da[s][k]!r} != {db[s][k]!r}")
    return out
