"""Experiments that test the method's claims on SynthDFER, whose ground truth knows the noisy and hard clips.

- `python -m rdfer.experiments.noise`: label-noise robustness, and which per-sample statistic tells a wrong
  label from a hard clip; the methods it measures against are in `rdfer.experiments.baselines`.
"""
