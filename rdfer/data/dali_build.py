"""Which NVIDIA DALI build is installed, which CUDA torch was built for, and whether the two match.

DALI ships one wheel per CUDA major (nvidia-dali-cuda120, nvidia-dali-cuda130); rdfer's extras `dali-cu12` and
`dali-cu13` install one of them. pip cannot pick the extra from the installed torch (an environment marker
cannot see another package), so the loader and `python -m rdfer.data summary` say when the two disagree.
Read from the installed packages' metadata: nothing here imports DALI.
"""

from __future__ import annotations

import importlib.metadata
import re

import torch

_WHEEL = re.compile(r"nvidia-dali-cuda(\d+)0$")  # nvidia-dali-cuda120 -> CUDA 12


def installed_dali() -> list[tuple[str, str, int]]:
    """(distribution, version, CUDA major) of every DALI wheel installed, sorted by name."""
    found = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        match = _WHEEL.match(name)
        if match:
            found.add((name, dist.version, int(match.group(1))))
    return sorted(found)


def torch_cuda_major(version: str | None = None) -> int | None:
    """The CUDA major of torch's build (torch.version.cuda by default); None for a CPU build."""
    version = torch.version.cuda if version is None else version
    return int(version.split(".")[0]) if version else None


def extra_for_torch(cuda_major: int | None = None) -> str:
    """The rdfer extra whose DALI matches torch's CUDA: dali-cu13 for CUDA 13 (and newer), else dali-cu12
    (CUDA 12, and CPU builds of torch, where DALI runs on the CPU and either wheel works)."""
    major = torch_cuda_major() if cuda_major is None else cuda_major
    return "dali-cu13" if major is not None and major >= 13 else "dali-cu12"


def mismatch(dali: list[tuple[str, str, int]], cuda: str | None, torch_version: str) -> str | None:
    """One line naming the installed DALI builds `dali` (installed_dali()) and torch's CUDA `cuda` when they
    do not match, else None. A CPU torch (cuda None) matches any DALI: DALI then decodes on the CPU."""
    major = torch_cuda_major(cuda) if cuda else None
    if major is None or not dali:
        return None
    names = ", ".join(f"{name} {version}" for name, version, _ in dali)
    fix = (
        f"pip uninstall -y {' '.join(n for n, _, _ in dali)} && pip install 'rdfer[{extra_for_torch(major)}]'"
    )
    if len(dali) > 1:
        return f"several DALI builds are installed ({names}), torch {torch_version} is for CUDA {cuda}: {fix}"
    if dali[0][2] == major:
        return None
    return f"DALI {names} is built for CUDA {dali[0][2]}, torch {torch_version} for CUDA {cuda}: {fix}"


def check() -> str | None:
    """mismatch() of this environment."""
    return mismatch(installed_dali(), torch.version.cuda, torch.__version__)
