"""What setup.py needs to build rdfer._C: the CUDA toolkit, the GPU architectures, and the build record.

Plain functions of their inputs (an environment mapping, paths, nvcc's answers), so tests/test_build.py checks
them on fake toolkit trees without a compiler. Lives beside setup.py and is not installed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import NamedTuple

# SASS for the data-centre and consumer GPUs of the last generations: T4/RTX 20xx, A100, A10/A40/RTX 30xx,
# L4/L40/RTX 40xx, H100/H200, B200/GB200, RTX 50xx/RTX PRO 6000, plus PTX of the newest, which the driver
# compiles for any later GPU. 8.7-8.9 run the 8.6 SASS, 10.3 the 10.0 SASS and 12.1 the 12.0 SASS.
DEFAULT_ARCHS = "7.5;8.0;8.6;9.0;10.0;12.0+PTX"


class Toolkit(NamedTuple):
    home: str  # the root: bin/nvcc, include/, the runtime library
    lib_dir: str  # the directory holding libcudart.so, passed to the linker
    version: tuple[int, int] | None  # CUDART_VERSION from include/cuda_runtime_api.h


class Search(NamedTuple):
    toolkit: Toolkit | None
    rejected: list[tuple[str, str]]  # (candidate, why it was not used), in the order they were tried


class Arch(NamedTuple):
    major: int
    minor: int
    suffix: str = ""  # "a" (architecture-specific) or "f" (family-specific), as in sm_90a
    ptx: bool = False  # also embed PTX, for the driver to compile on newer GPUs

    @property
    def code(self) -> str:
        return f"{self.major}{self.minor}{self.suffix}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}{self.suffix}" + ("+PTX" if self.ptx else "")


# --- the toolkit --------------------------------------------------------------------------------------------


def _runtime_lib_dir(home: str) -> str | None:
    """Where the linker finds libcudart.so (the unversioned name that -lcudart needs)."""
    for pattern in ("lib64", "lib", "targets/*/lib"):
        for lib_dir in sorted(glob.glob(os.path.join(home, pattern))):
            if os.path.exists(os.path.join(lib_dir, "libcudart.so")):
                return lib_dir
    return None


def _header_version(header: str) -> tuple[int, int] | None:
    with open(header, errors="replace") as f:
        match = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", f.read())
    if match is None:
        return None
    number = int(match.group(1))
    return number // 1000, number % 1000 // 10


def examine(home: str) -> Toolkit | str:
    """The toolkit rooted at `home`, or why it is not one that can build rdfer._C."""
    if not os.path.isdir(home):
        return "no such directory"
    nvcc = os.path.join(home, "bin", "nvcc")
    if not (os.path.isfile(nvcc) and os.access(nvcc, os.X_OK)):
        return "no executable bin/nvcc"
    header = os.path.join(home, "include", "cuda_runtime_api.h")
    if not os.path.isfile(header):
        return "no include/cuda_runtime_api.h (the CUDA runtime headers)"
    lib_dir = _runtime_lib_dir(home)
    if lib_dir is None:
        return "no runtime library to link: lib64/libcudart.so or targets/*/lib/libcudart.so"
    return Toolkit(home, lib_dir, _header_version(header))


def _script_targets(path: str) -> list[str]:
    """The absolute .../bin/nvcc paths a wrapper names, as in `exec /usr/local/cuda-13.0/bin/nvcc "$@"`."""
    with open(path, "rb") as f:
        text = f.read(65536).decode(errors="replace")
    return re.findall(r"(/[^\s'\"`;|&<>()$]*/bin/nvcc)(?![\w.-])", text)


def _nvcc_candidates(nvcc: str) -> list[tuple[str, str]]:
    """Toolkit roots behind an nvcc found on PATH: through symlinks, and into the toolkit a wrapper calls."""
    real = os.path.realpath(nvcc)
    with open(real, "rb") as f:
        is_script = f.read(2) == b"#!"
    targets = _script_targets(real) if is_script else []
    if not targets:
        kind = "a wrapper script naming no toolkit" if is_script else "nvcc on PATH"
        return [(os.path.dirname(os.path.dirname(real)), f"{kind}: {nvcc}")]
    return [
        (os.path.dirname(os.path.dirname(os.path.realpath(t))), f"the nvcc that the wrapper {nvcc} calls")
        for t in targets
    ]


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", os.path.basename(path)))


def candidates(environ: Mapping[str, str], prefix: str = "/usr/local") -> list[tuple[str, str]]:
    """Toolkit roots to try, in order, each with where it came from."""
    found = [(environ[var], f"${var}") for var in ("CUDA_HOME", "CUDA_PATH") if environ.get(var)]
    nvcc = shutil.which("nvcc", path=environ.get("PATH", ""))
    if nvcc is not None:
        found += _nvcc_candidates(nvcc)
    found.append((os.path.join(prefix, "cuda"), "the default location"))
    versioned = sorted(glob.glob(os.path.join(prefix, "cuda-*")), key=_version_key, reverse=True)
    found += [(path, "a versioned install") for path in versioned]
    return found


def find_toolkit(environ: Mapping[str, str], torch_cuda: str | None, prefix: str = "/usr/local") -> Search:
    """The first candidate that is a whole toolkit of torch's CUDA major version (torch refuses another)."""
    torch_major = int(torch_cuda.split(".")[0]) if torch_cuda else None
    rejected, seen = [], set()
    for path, origin in candidates(environ, prefix):
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        result = examine(path)
        if isinstance(result, str):
            if os.path.exists(path) or origin.startswith("$"):
                rejected.append((f"{path} ({origin})", result))
        elif torch_major is not None and result.version and result.version[0] != torch_major:
            why = f"CUDA {result.version[0]}.{result.version[1]}, but torch was built with CUDA {torch_cuda}"
            rejected.append((f"{path} ({origin})", why))
        else:
            return Search(result, rejected)
    return Search(None, rejected)


def cuda_requirement(forced: bool, gpu_visible: bool, search: Search) -> str | None:
    """Why the CUDA part must be built, so that a missing toolkit stops the build; None where it is optional.

    Optional only for a CUDA torch on a machine with no GPU and no trace of a toolkit (the default torch wheel
    on a CPU machine): the C++ part alone serves it. With a GPU, or a toolkit seen but not usable, a C++-only
    build would quietly lose the CUDA kernels."""
    if forced:
        return "RDFER_FORCE_CUDA_BUILD=1 asks for the CUDA part"
    if gpu_visible:
        return "a GPU is visible"
    if search.rejected:
        return "a CUDA install was seen"
    return None


def not_found_message(search: Search, torch_version: str, torch_cuda: str, reason: str) -> str:
    """The one message setup.py stops with when the CUDA part was asked for and no toolkit can build it."""
    lines = [
        f"rdfer: {reason}, but no usable CUDA toolkit was found for torch {torch_version} "
        f"(CUDA {torch_cuda})."
    ]
    if search.rejected:
        lines.append("Looked at:")
        lines += [f"  {where}: {why}" for where, why in search.rejected]
    else:
        lines.append("Looked at $CUDA_HOME, $CUDA_PATH, nvcc on PATH, /usr/local/cuda and /usr/local/cuda-*.")
    major = torch_cuda.split(".")[0]
    lines += [
        f"Fix: install a CUDA {major}.x toolkit (bin/nvcc, include/, lib64/libcudart.so) and set CUDA_HOME",
        "     to it, or set RDFER_SKIP_CUDA_BUILD=1 to build the C++ (CPU) part only: the ops then run their",
        "     PyTorch twins on CUDA tensors.",
    ]
    return "\n".join(lines)


# --- architectures ------------------------------------------------------------------------------------------

_ARCH = re.compile(r"(?:(\d+)\.(\d)|(\d+)(\d))([af]?)(\+ptx)?", re.IGNORECASE)

# The variables naming the architectures, the one that wins first. TORCH_CUDA_ARCH_LIST is what torch's
# cpp_extension reads for every extension; RDFER_CUDA_ARCHS is rdfer's older name, kept as an alias, and wins
# where both are set (the more specific setting), with a note when they differ.
ARCH_VARIABLES = ("RDFER_CUDA_ARCHS", "TORCH_CUDA_ARCH_LIST")

# torch's named architectures (torch/utils/cpp_extension.py, _get_cuda_arch_flags), so that a
# TORCH_CUDA_ARCH_LIST written for torch means the same here.
NAMED_ARCHS = {
    "kepler+tesla": "3.7",
    "kepler": "3.5+PTX",
    "maxwell+tegra": "5.3",
    "maxwell": "5.0;5.2+PTX",
    "pascal": "6.0;6.1+PTX",
    "volta+tegra": "7.2",
    "volta": "7.0+PTX",
    "turing": "7.5+PTX",
    "ampere+tegra": "8.7",
    "ampere": "8.0;8.6+PTX",
    "ada": "8.9+PTX",
    "hopper": "9.0+PTX",
    "blackwell+tegra": "11.0",
    "blackwell": "10.0;10.3;12.0;12.1+PTX",
}


def parse_archs(
    text: str, source: str = "RDFER_CUDA_ARCHS", native: list[tuple[int, int]] | None = None
) -> list[Arch]:
    """'8.0;9.0', '8.0 9.0', '9.0a', '12.0+PTX', 'Hopper', 'native' (TORCH_CUDA_ARCH_LIST's forms), '80 90'.

    native: the compute capabilities of the visible GPUs, which 'native' stands for (the newest also as PTX,
    as torch does)."""
    archs = []
    for token in re.split(r"[;,\s]+", text.strip()):
        if not token:
            continue
        if token.lower() in NAMED_ARCHS:
            archs += parse_archs(NAMED_ARCHS[token.lower()], source)
            continue
        if token.lower() == "native":
            if not native:
                raise ValueError(
                    f"{source}: 'native' needs a visible GPU; name the architectures, e.g. '9.0'"
                )
            found = sorted(set(native))
            archs += [Arch(*c) for c in found[:-1]] + [Arch(*found[-1], ptx=True)]
            continue
        match = _ARCH.fullmatch(token)
        if match is None:
            raise ValueError(
                f"{source}: {token!r} is not a CUDA architecture; "
                "write e.g. '8.0;9.0;12.0+PTX', '80 90 120+PTX' or 'Hopper'"
            )
        major, minor = (
            (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        )
        archs.append(Arch(int(major), int(minor), match.group(5).lower(), match.group(6) is not None))
    if not archs:
        raise ValueError(f"{source} is empty; write e.g. '8.0;9.0;12.0+PTX'")
    return archs


def requested_archs(environ: Mapping[str, str]) -> tuple[str | None, str, str | None]:
    """(the architecture list asked for, the variable it came from, a note where the other one differs).

    An empty variable counts as unset, as torch counts it."""
    given = [(var, environ[var].strip()) for var in ARCH_VARIABLES if environ.get(var, "").strip()]
    if not given:
        return None, ARCH_VARIABLES[-1], None
    (var, text), others = given[0], given[1:]
    note = None
    if others and not _same_archs(text, others[0][1]):
        note = f"{var}={text!r} wins over {others[0][0]}={others[0][1]!r}"
    return text, var, note


def build_archs(
    environ: Mapping[str, str], supported: set[str], native: list[tuple[int, int]] | None = None
) -> tuple[list[Arch], str | None]:
    """What setup.py builds for: the architectures the environment asks for (or the default), and the note
    to print where TORCH_CUDA_ARCH_LIST and RDFER_CUDA_ARCHS disagree."""
    requested, source, note = requested_archs(environ)
    return choose_archs(requested, supported, source, native), note


def _same_archs(a: str, b: str) -> bool:
    try:
        return parse_archs(a) == parse_archs(b)
    except ValueError:  # 'native' or a bad value: only the same text is the same
        return a == b


def nvcc_supported(nvcc: str) -> set[str]:
    """The sm_XY codes this nvcc can compile for (`nvcc --list-gpu-code`)."""
    out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"sm_\d+", out))


def choose_archs(
    requested: str | None,
    supported: set[str],
    source: str = "RDFER_CUDA_ARCHS",
    native: list[tuple[int, int]] | None = None,
) -> list[Arch]:
    """The requested architectures (all must be supported), or the default cut to what this nvcc supports.

    source: the variable `requested` came from, named in every error."""
    if requested:
        archs = parse_archs(requested, source, native)
        missing = [str(a) for a in archs if f"sm_{a.major}{a.minor}" not in supported]
        if missing:
            raise ValueError(
                f"{source}: this nvcc cannot compile for {', '.join(missing)}; it supports "
                f"{', '.join(sorted(supported, key=_version_key))}"
            )
        return archs
    archs = [a._replace(ptx=False) for a in parse_archs(DEFAULT_ARCHS) if f"sm_{a.code}" in supported]
    if not archs:
        raise ValueError(f"this nvcc supports none of the default architectures {DEFAULT_ARCHS}")
    return [*archs[:-1], archs[-1]._replace(ptx=True)]


def gencode_flags(archs: list[Arch]) -> list[str]:
    flags = []
    for a in archs:
        flags.append(f"-gencode=arch=compute_{a.code},code=sm_{a.code}")
        if a.ptx:
            flags.append(f"-gencode=arch=compute_{a.code},code=compute_{a.code}")
    return flags


# --- the build record ---------------------------------------------------------------------------------------


def build_record(torch_version: str, torch_cuda: str | None, archs: list[Arch], source_dir: str) -> str:
    """The text of rdfer/_build_info.py, which rdfer.ops.dispatch compares with the torch it runs under."""
    return (
        '"""The torch rdfer._C was built against. Written by setup.py with the extension; do not edit."""\n\n'
        f"TORCH_VERSION = {torch_version!r}\n"
        f"TORCH_CUDA = {torch_cuda!r}  # None: built against a CPU build of torch\n"
        f"CUDA_ARCHS = {';'.join(map(str, archs))!r}  # empty: built without CUDA kernels\n"
        f"SOURCE_DIR = {source_dir!r}\n"
    )
