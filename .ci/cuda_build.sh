#!/usr/bin/env bash
# CI: the CUDA build a user gets, on a machine with a CUDA toolkit and no GPU. In a fresh virtualenv with the
# CUDA 13 build of torch, install rdfer editable with README's command and no hand-set variable (setup.py must
# find the toolkit itself, past the nvcc wrapper script), then check that every torch.ops.rdfer operator has a
# CUDA kernel, that the extension embeds SASS for each architecture and PTX for newer GPUs, and that every
# Triton kernel configuration compiles for sm_80/90/100 (.ci/compile_kernels.py, where it exists).
# The build runs on a copy of the tree, so the checkout's own (CPU) build of rdfer._C stays as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Runs a step with its output in a log, shown only if the step fails.
quietly() {
    local log="$work/$1.log"
    shift
    if ! "$@" >"$log" 2>&1; then
        cat "$log"
        echo "cuda_build: FAIL: $*"
        exit 1
    fi
}

python -m venv "$work/venv"
py="$work/venv/bin/python"
quietly venv "$py" -m pip install --disable-pip-version-check torch==2.14.1 setuptools wheel ninja
torch_version="$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))')"
echo "cuda_build: venv with torch $torch_version in $((SECONDS - start)) s"

mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | tar -c --null -T - | tar -x -C "$work/src"
build_start=$SECONDS
cd "$work/src"
quietly build env -u CUDA_HOME -u CUDA_PATH -u TORCH_CUDA_ARCH_LIST -u RDFER_SKIP_EXT -u RDFER_SKIP_CUDA_BUILD \
    -u RDFER_FORCE_CUDA_BUILD -u RDFER_CUDA_ARCHS \
    "$py" -m pip install -v --disable-pip-version-check --no-build-isolation -e .
grep -E '^\s*rdfer:' "$work/build.log" || true
echo "cuda_build: rdfer built in $((SECONDS - build_start)) s"

"$py" .ci/check_extension.py CPU CUDA --cubins
if [ -f .ci/compile_kernels.py ]; then
    # RDFER's own shapes, every dtype, for sm_80/90/100 (60 kernels, ~20 s). Every configuration the
    # dispatch can choose (`python .ci/compile_kernels.py`, 470 kernels) takes 26 min from a cold
    # cache on 2 cores, past CI's budget. A fresh Triton cache: an earlier run's kernels must not count.
    TRITON_CACHE_DIR="$work/triton-cache" "$py" .ci/compile_kernels.py --rdfer-shapes
else
    echo "cuda_build: no .ci/compile_kernels.py yet: Triton kernels not compiled"
fi
echo "cuda_build: passed in $((SECONDS - start)) s"
