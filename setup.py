"""Builds rdfer._C from csrc/ and installs kernels/ as rdfer.kernels.

rdfer._C is compiled against the torch it will run with, so install torch first and build inside its
environment:  pip install --no-build-isolation -e .
torch is deliberately not a build requirement: an isolated build would compile against a torch fetched for the
build alone (rarely the one installed). Without --no-build-isolation the build stops and says so.

What gets built (extension_build.py beside this file finds the toolkit and the architectures):
  - the C++ (CPU) ops, always;
  - the CUDA ops when torch is a CUDA build and a CUDA toolkit of torch's CUDA major version is found
    ($CUDA_HOME, $CUDA_PATH, nvcc on PATH also behind a symlink or wrapper script, /usr/local/cuda,
    /usr/local/cuda-*), whether or not a GPU is present (build machines, CI). Where torch has CUDA and no
    usable toolkit is found, the build stops with what it found and what to do if a GPU is visible or some
    CUDA install was seen; with neither (a CUDA torch on a plain CPU machine) it builds the C++ part only.

Environment switches (flash-attention style):
  RDFER_SKIP_EXT=1          build no extension at all (rdfer.ops then uses the PyTorch twins)
  RDFER_SKIP_CUDA_BUILD=1   build the C++ (CPU) part only
  RDFER_FORCE_CUDA_BUILD=1  the CUDA part is required: stop with a message where it cannot be built
  TORCH_CUDA_ARCH_LIST      GPU architectures, as torch's cpp_extension reads it for any extension:
                            "8.0;9.0+PTX", "8.0 9.0", torch's names ("Ampere;Hopper"), "native" (the visible
                            GPUs), also "80 90 120+PTX" (+PTX also embeds PTX for newer GPUs); default:
                            extension_build.DEFAULT_ARCHS, cut to what nvcc supports
  RDFER_CUDA_ARCHS          an alias of TORCH_CUDA_ARCH_LIST that wins where both are set (a line says so when
                            they differ)
  CUDA_HOME                 the toolkit to use (it must contain bin/nvcc and lib64/libcudart.so)
"""

import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import extension_build  # noqa: E402  (a module beside this file, importable only once HERE is on the path)

# setup.py also runs to answer metadata questions (egg_info, sdist); those need no torch. dist_info is pip's
# metadata step before it resolves dependencies and builds: checking for torch there fails an isolated build
# before pip fetches anything.
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist_egg"}
TORCH_COMMANDS = BUILD_COMMANDS | {"dist_info"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def _import_torch():
    try:
        import torch
    except ImportError:
        sys.exit(
            "rdfer: torch is not importable in this build environment. rdfer._C is compiled against the "
            "torch you run it with, so install torch first, then build inside that environment:\n"
            "    pip install --no-build-isolation -e .      (or without -e)\n"
            "RDFER_SKIP_EXT=1 installs without the extension (the ops then run their PyTorch twins)."
        )
    return torch


def _cuda_toolkit(torch, forced: bool):
    """The toolkit for the CUDA part, or None for the C++ part only; stops where CUDA is required."""
    if torch.version.cuda is None:
        if forced:
            sys.exit(
                f"rdfer: RDFER_FORCE_CUDA_BUILD=1 needs a CUDA build of torch; torch {torch.__version__} "
                "has no CUDA. Install a CUDA build of torch first."
            )
        return None
    search = extension_build.find_toolkit(os.environ, torch.version.cuda)
    if search.toolkit is not None:
        for where, why in search.rejected:
            print(f"rdfer: not using {where}: {why}", file=sys.stderr)
        return search.toolkit
    reason = extension_build.cuda_requirement(forced, torch.cuda.is_available(), search)
    if reason is not None:
        sys.exit(extension_build.not_found_message(search, torch.__version__, torch.version.cuda, reason))
    print(
        f"rdfer: torch {torch.__version__} has CUDA but no GPU or CUDA toolkit is here: building the C++ "
        "part only (the ops run their PyTorch twins on CUDA tensors)",
        file=sys.stderr,
    )
    return None


def _visible_gpus(torch) -> list[tuple[int, int]]:
    return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def _gencode(torch, toolkit) -> tuple[list[str], list]:
    nvcc = os.path.join(toolkit.home, "bin", "nvcc")
    requested = extension_build.requested_archs(os.environ)[0] or ""
    # The visible GPUs are what "native" stands for; asked only then (the query starts CUDA in this process).
    visible = _visible_gpus(torch) if "native" in requested.lower() else None
    try:
        archs, note = extension_build.build_archs(os.environ, extension_build.nvcc_supported(nvcc), visible)
    except ValueError as e:
        sys.exit(f"rdfer: {e}")
    if note is not None:
        print(f"rdfer: {note}", file=sys.stderr)
    return extension_build.gencode_flags(archs), archs


def _recording(base, record: str):
    """build_ext that writes rdfer/_build_info.py beside the extension it built (in place for -e installs)."""

    class BuildExt(base):
        def run(self):
            super().run()
            target = os.path.join(os.path.dirname(self.get_ext_fullpath("rdfer._C")), "_build_info.py")
            with open(target, "w") as f:
                f.write(record)

    return BuildExt


def ext_modules():
    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    commands = set(sys.argv[1:])
    if _flag("RDFER_SKIP_EXT") or not cpp or not commands & TORCH_COMMANDS:
        return [], {}
    torch = _import_torch()
    if not commands & BUILD_COMMANDS:
        return [], {}
    wants_cuda = bool(cu) and not _flag("RDFER_SKIP_CUDA_BUILD")
    toolkit = _cuda_toolkit(torch, _flag("RDFER_FORCE_CUDA_BUILD")) if wants_cuda else None
    if toolkit is not None:
        os.environ["CUDA_HOME"] = toolkit.home  # torch's own guess trusts a wrapper's directory
    from torch.utils import cpp_extension

    # No -std: cpp_extension adds the standard the installed torch is built with (C++20 for torch 2.13, whose
    # headers use C++20 features). -ffp-contract=off: the re-sampling indices must round like the twin's
    # separate float32 ops (no FMA contraction, e.g. on aarch64 where FMA is baseline).
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off"]
    kwargs = dict(name="rdfer._C", include_dirs=[os.path.join(HERE, "csrc")], extra_link_args=["-fopenmp"])
    archs = []
    if toolkit is not None:
        cpp_extension.CUDA_HOME = toolkit.home  # in case cpp_extension was imported before CUDA_HOME was set
        gencode, archs = _gencode(torch, toolkit)
        ext = cpp_extension.CUDAExtension(
            sources=cpp + cu,
            define_macros=[("RDFER_WITH_CUDA", None)],
            library_dirs=[toolkit.lib_dir],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", *gencode]},
            **kwargs,
        )
        print(
            f"rdfer: building the CUDA part with {toolkit.home} for {';'.join(map(str, archs))}",
            file=sys.stderr,
        )
    else:
        ext = cpp_extension.CppExtension(sources=cpp, extra_compile_args={"cxx": cxx}, **kwargs)
    record = extension_build.build_record(torch.__version__, torch.version.cuda, archs, HERE)
    base = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": _recording(base, record)}


ext, cmdclass = ext_modules()
setup(
    packages=find_packages(include=["rdfer", "rdfer.*"]) + ["rdfer.kernels"],
    package_dir={"rdfer.kernels": "kernels"},
    ext_modules=ext,
    cmdclass=cmdclass,
)
