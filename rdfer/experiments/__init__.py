"""Experiments that test the method's claims on SynthDFER, whose ground truth knows the noisy and hard clips.

- `python -m rdfer.experiments.noise`: label-noise robustness and the agreement's noisy-vs-hard separation.
"""
