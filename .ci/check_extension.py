"""Checks the rdfer._C this Python imports: built for the running torch, and every operator it defines has a
kernel for each dispatch key named; with --cubins, it embeds machine code (SASS) for every architecture of its
build record and PTX for the +PTX ones (read with cuobjdump, so no GPU is needed).

    python .ci/check_extension.py CPU CUDA --cubins

Exits non-zero, naming what is missing, where a check fails.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from extension_build import parse_archs  # noqa: E402  (beside setup.py, not installed)


def defined_operators() -> tuple[object, list[str]]:
    """Imports rdfer._C and returns it with the operators its import registered (not a hand-kept list)."""
    before = set(torch._C._dispatch_get_all_op_names())
    ext = importlib.import_module("rdfer._C")
    return ext, sorted(set(torch._C._dispatch_get_all_op_names()) - before)


def cuobjdump() -> str:
    """cuobjdump from PATH, the toolkit, or the copy Triton ships beside its compiler."""
    found = shutil.which("cuobjdump") or shutil.which("cuobjdump", path="/usr/local/cuda/bin")
    if found:
        return found
    spec = importlib.util.find_spec("triton")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if bundled.is_file():
            return str(bundled)
    sys.exit("check_extension: no cuobjdump (PATH, /usr/local/cuda/bin, triton's backends/nvidia/bin)")


def embedded(library: str, listing: str) -> set[str]:
    """The sm_XY codes of the cubins (listing 'elf') or PTX files (listing 'ptx') in a shared library."""
    out = subprocess.run(
        [cuobjdump(), f"--list-{listing}", library], capture_output=True, text=True, check=True
    )
    return set(re.findall(r"\.(sm_\d+[af]?)\.(?:cubin|ptx)\b", out.stdout))


def check_cubins(library: str, archs_text: str) -> list[str]:
    if not archs_text:
        return ["the build record lists no CUDA architectures: rdfer._C was built without CUDA"]
    archs = parse_archs(archs_text, "rdfer/_build_info.py CUDA_ARCHS")
    elf, ptx = embedded(library, "elf"), embedded(library, "ptx")
    print(f"cubins: {' '.join(sorted(elf))}; PTX: {' '.join(sorted(ptx)) or 'none'}")
    problems = [f"no SASS for sm_{a.code}" for a in archs if f"sm_{a.code}" not in elf]
    problems += [f"no PTX for compute_{a.code}" for a in archs if a.ptx and f"sm_{a.code}" not in ptx]
    if not ptx:
        problems.append("no PTX at all: GPUs newer than the listed architectures could not run the ops")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "keys", nargs="+", help="dispatch keys every operator needs a kernel for, e.g. CPU CUDA"
    )
    parser.add_argument("--cubins", action="store_true", help="check the embedded SASS and PTX too")
    args = parser.parse_args()

    from rdfer.ops import dispatch

    record = dispatch.build_record()
    mismatch = dispatch.check_build(record, torch.__version__, torch.version.cuda)
    if record is None or mismatch:
        print(f"FAIL: {mismatch or 'no rdfer/_build_info.py: rdfer._C was not built by this setup.py'}")
        return 1
    ext, ops = defined_operators()
    print(f"rdfer._C: {ext.__file__}\ntorch {torch.__version__}, {len(ops)} operators: {', '.join(ops)}")
    problems = [] if ops else ["importing rdfer._C registered no operators"]
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    problems += [f"{op} has no {key} kernel" for key in args.keys for op in ops if not has_kernel(op, key)]
    if args.cubins:
        problems += check_cubins(ext.__file__, record.CUDA_ARCHS)
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        checked = " and ".join(args.keys) + " kernels" + (", SASS and PTX as recorded" if args.cubins else "")
        print(f"OK: every operator has {checked}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
