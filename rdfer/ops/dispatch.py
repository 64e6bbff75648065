"""The rule that picks a fast path or its PyTorch twin.

`RDFER_KERNELS=reference` forces the twins everywhere (read at each call, so tests can flip it).
`RDFER_KERNELS=fast` makes a missing fast path an error instead of a fallback.

rdfer._C is compiled against one torch; setup.py records which in rdfer/_build_info.py. A missing extension,
one built for another torch (not even imported: a mismatched C++ ABI can crash the process), or one built
without CUDA on a machine with a GPU is reported once with an ExtensionWarning that names the fix; the ops
then run their twins. Under RDFER_KERNELS=fast a missing or mismatched extension is an error.
"""

from __future__ import annotations

import functools
import importlib
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from rdfer import environment


class ExtensionWarning(UserWarning):
    """rdfer._C is missing, built for another torch, or without the CUDA kernels this machine could use."""


def mode() -> str:
    value = environment.get("RDFER_KERNELS", "auto").lower()
    if value not in ("auto", "reference", "fast"):
        raise ValueError(f"RDFER_KERNELS must be auto, reference or fast, got {value!r}")
    return value


def build_record():
    """rdfer/_build_info.py (what rdfer._C was built against), or None where setup.py wrote none."""
    try:
        from rdfer import _build_info
    except ImportError:
        return None
    return _build_info


def _describe(version: str, cuda: str | None) -> str:
    return f"torch {version} ({f'CUDA {cuda}' if cuda else 'no CUDA'})"


def rebuild_command(record) -> str:
    """The command that rebuilds rdfer._C against the running torch, from the source folder it came from."""
    pip = f"{shlex.quote(sys.executable)} -m pip install --no-build-isolation"
    here = Path(__file__).resolve().parents[2]  # the folder holding the rdfer package
    source = getattr(record, "SOURCE_DIR", None) or str(here)
    if not Path(source, "setup.py").is_file():
        return f"{pip} --force-reinstall --no-deps <the rdfer source folder>"
    if Path(source).resolve() == here:  # an editable install: the package runs from its source folder
        return f"{pip} -e {shlex.quote(source)}"
    return f"{pip} --force-reinstall --no-deps {shlex.quote(source)}"


def check_build(record, torch_version: str, torch_cuda: str | None) -> str | None:
    """Why rdfer._C must not be loaded under this torch, or None where the record matches (or is absent)."""
    if record is None or (record.TORCH_VERSION, record.TORCH_CUDA) == (torch_version, torch_cuda):
        return None
    return (
        f"rdfer._C was built for {_describe(record.TORCH_VERSION, record.TORCH_CUDA)}, but "
        f"{_describe(torch_version, torch_cuda)} is installed, so rdfer runs the PyTorch twins instead of "
        f"its C++/CUDA ops. Rebuild it against the installed torch: {rebuild_command(record)}"
    )


@functools.cache
def _load():
    """(rdfer._C or None, what to report or None); decided once per process."""
    import torch

    record = build_record()
    problem = check_build(record, torch.__version__, torch.version.cuda)
    if problem is not None:
        return None, problem
    try:
        _C = importlib.import_module("rdfer._C")
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and e.name == "rdfer._C"
        what = "is not built" if missing else f"cannot be imported ({e})"
        return None, (
            f"rdfer._C {what}, so rdfer runs the PyTorch twins instead of its C++/CUDA ops. Build it against "
            f"the installed torch: {rebuild_command(record)}"
        )
    if record is not None and not record.CUDA_ARCHS and torch.cuda.is_available():
        return _C, (
            "rdfer._C was built without CUDA kernels (no CUDA toolkit, or RDFER_SKIP_CUDA_BUILD=1), so on "
            "CUDA tensors the re-sampling ops run their PyTorch twins. Install a CUDA "
            f"{torch.version.cuda} toolkit (set CUDA_HOME if it is not /usr/local/cuda), then: "
            f"{rebuild_command(record)}"
        )
    return _C, None


_reported: set[str] = set()


def extension():
    """rdfer._C (the C++/CUDA extension), or None where it is missing or built for another torch."""
    ext, problem = _load()
    if problem is None or mode() == "reference":
        return ext
    if ext is None and mode() == "fast":
        raise RuntimeError(f"RDFER_KERNELS=fast: {problem}")
    if problem not in _reported:
        _reported.add(problem)
        warnings.warn(problem, ExtensionWarning, stacklevel=2)
    return ext


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


def use_triton(
    kernel: str, tensors: tuple, module: Callable[[], ModuleType], context: Callable[[], str]
) -> bool:
    """Whether a Triton kernel takes these inputs: never under RDFER_KERNELS=reference; otherwise where Triton
    can run on their device and the kernel's module (`module()`, rdfer.kernels.<kernel>, imported only then)
    accepts them: its kernel_problem(*tensors) finds nothing and pipelining(*tensors) fits the device's
    shared memory. Under RDFER_KERNELS=fast a refusal is an error naming the kernel, context() (its inputs)
    and the reason."""
    wanted = mode()
    if wanted == "reference":
        return False
    device = tensors[0].device
    if not triton_usable(device):
        problem = f"it needs Triton and a CUDA device (or TRITON_INTERPRET=1 on CPU); got {device}"
    else:
        kernels = module()
        problem = kernels.kernel_problem(*tensors) or kernels.pipelining(*tensors)[1] or None
    if problem is None:
        return True
    if wanted == "fast":
        raise RuntimeError(
            f"RDFER_KERNELS=fast but the {kernel.replace('_', ' ')} kernel cannot run here ({context()}): "
            f"{problem}. Unset RDFER_KERNELS to use the PyTorch twin."
        )
    return False
