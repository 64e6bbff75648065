"""Builds rdfer._C from csrc/ and installs kernels/ as rdfer.kernels.

Environment switches (flash-attention style, so a CPU-only install always works):
  RDFER_SKIP_EXT=1          build no extension at all (rdfer.ops then uses the PyTorch twins)
  RDFER_SKIP_CUDA_BUILD=1   build the C++ (CPU) part only, even where CUDA is available
  RDFER_FORCE_CUDA_BUILD=1  build the CUDA part even when torch reports no GPU (e.g. a build machine);
                            needs a CUDA build of torch and nvcc
  RDFER_CUDA_ARCHS="80;90"  CUDA architectures (default: 8.0 and 9.0)
"""
import glob
import os

from setuptools import find_packages, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def ext_modules():
    if _flag("RDFER_SKIP_EXT"):
        return [], {}
    from torch.utils import cpp_extension

    here = os.path.dirname(os.path.abspath(__file__))
    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    if not cpp:
        return [], {}
    import torch

    has_cuda_torch = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    want_cuda = bool(cu) and not _flag("RDFER_SKIP_CUDA_BUILD") and (
        _flag("RDFER_FORCE_CUDA_BUILD") or (has_cuda_torch and torch.cuda.is_available())
    )
    if _flag("RDFER_FORCE_CUDA_BUILD") and not has_cuda_torch:
        raise RuntimeError("RDFER_FORCE_CUDA_BUILD=1 needs a CUDA build of torch and nvcc (CUDA_HOME)")
    # No -std: cpp_extension adds the standard the installed torch is built with (C++20 for torch 2.13, whose
    # headers use C++20 features). -ffp-contract=off: the re-sampling indices must round like the twin's
    # separate float32 ops (no FMA contraction, e.g. on aarch64 where FMA is baseline).
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off"]
    kwargs = dict(
        name="rdfer._C",
        include_dirs=[os.path.join(here, "csrc")],
        extra_link_args=["-fopenmp"],
    )
    if want_cuda:
        archs = os.environ.get("RDFER_CUDA_ARCHS", "80;90").split(";")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        ext = cpp_extension.CUDAExtension(
            sources=cpp + cu,
            define_macros=[("RDFER_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", *gencode]},
            **kwargs,
        )
    else:
        ext = cpp_extension.CppExtension(sources=cpp, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext, cmdclass = ext_modules()
setup(
    packages=find_packages(include=["rdfer", "rdfer.*"]) + ["rdfer.kernels"],
    package_dir={"rdfer.kernels": "kernels"},
    ext_modules=ext,
    cmdclass=cmdclass,
)
