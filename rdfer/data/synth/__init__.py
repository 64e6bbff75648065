"""SynthDFER: a synthetic dynamic-facial-expression benchmark with ground-truth hard and noisy samples.

Procedurally drawn face videos in DFEW's 7 classes, written in DFEW's layout (dataset "synthetic", fold 1),
with `ground_truth.csv` saying, per clip, the true and the given label and why a clip is hard.

    from rdfer.data.synth import generate, load_ground_truth
    root = generate("quick", "cache/synth", seed=0, noise=0.3, noise_kind="symmetric")
    truth = load_ground_truth(root)

Modules: `expressions` (AU recipe per class, time course), `face` (drawing), `noise` (label-noise models),
`plan` (per-clip ground truth), `video` (optional .webm/.mp4), `generate` (layout, writing, CLI), `truth`.
"""

from rdfer.data.synth.config import PRESETS, SynthConfig
from rdfer.data.synth.expressions import CLASSES
from rdfer.data.synth.generate import add_arguments, frame_name, generate, run
from rdfer.data.synth.noise import NOISE_KINDS, PAIR_FLIPS
from rdfer.data.synth.truth import ClipTruth, load_ground_truth

__all__ = [
    "CLASSES",
    "NOISE_KINDS",
    "PAIR_FLIPS",
    "PRESETS",
    "ClipTruth",
    "SynthConfig",
    "add_arguments",
    "frame_name",
    "generate",
    "load_ground_truth",
    "run",
]
