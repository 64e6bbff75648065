"""The robust-training methods the noise experiment measures the package's `rdfer` method against
(docs/method.md §3). None is in the training core: each lost to `rdfer` in the experiment, or exists only to
judge it (the oracle). Each takes the trainer's selector arguments (robust, num_samples, epochs, device)
and is handed to `rdfer.training.train` through its `make_selector` argument.

- `exclusion`: the package's method before 2026-12 (a ramped exclusion of the highest mean losses, the share
  estimated by Confident Learning);
- `agreement`: the paper's agreement rule among the detail clips (the Triton agreement kernel);
- `coteaching`: the two streams pick each other's small-loss samples in every batch;
- `oracle`: the truly noisy samples left out from the first step.
"""
