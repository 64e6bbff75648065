"""The rule that picks a fast path or its PyTorch twin.

`RDFER_KERNELS=reference` forces the twins everywhere (read at each call, so tests can flip it).
`RDFER_KERNELS=fast` makes a missing fast path an error instead of a silent fallback.
"""
from __future__ import annotations

import functools
import os


def mode() -> str:
    value = os.environ.get("RDFER_KERNELS", "auto").lower()
    if value not in ("auto", "reference", "fast"):
        raise ValueError(f"RDFER_KERNELS must be auto, reference or fast, got {value!r}")
    return value


@functools.cache
def extension():
    """rdfer._C (the C++/CUDA extension), or None where it was not built."""
    try:
        from rdfer import _C  # noqa: F401
    except ImportError:
        return None
    return _C


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_usable(device) -> bool:
    """Triton kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter."""
    on_cuda = getattr(device, "type", device) == "cuda"
    if not on_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False  # decided without importing triton
    return triton_available()
