"""Compile every Triton kernel configuration rdfer's dispatch can choose, ahead of time and without a GPU, for
sm_80, sm_90 and sm_100, and check each against the arch's shared memory per block.

    python .ci/compile_kernels.py [--arch 80 90 100] [--op attention_gate agreement] [--rdfer-shapes]
                                  [--jobs N]

The configurations are each kernel module's `configurations()` (every dtype and block size its launch rule
gives for inputs its dispatch accepts; flags are run-time arguments). Each is compiled at the deepest
software pipelining first, and shallower only where that does not fit, which is the order of
rdfer.kernels._launch.choose_stages, the decision the dispatch makes at run time with the device's own
compiled kernels. Prints one row per compiled kernel (kernel, config, arch, stages, shared bytes, limit,
fits) and what the dispatch does with each configuration per arch; configurations that fall back to the
PyTorch twin are listed at the end.

Exits non-zero if a configuration fails to compile, if a launch the dispatch would make on an arch does not
fit it, or if one of RDFER's own shapes (the default model: synopsis and detail streams, head dim
2 * lstm_hidden / heads, any dtype; every agreement configuration) would fall back to the twin on an arch.
`--rdfer-shapes` compiles only those (the pytest check of one arch). Needs Triton with its CUDA backend and
rdfer installed; TRITON_INTERPRET is ignored.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

os.environ["TRITON_INTERPRET"] = "0"  # before rdfer.kernels is imported: compile, do not interpret

import torch  # noqa: E402

# The opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin) of the data-centre chips of
# each arch: A100 (sm_80) 163 KiB; H100/H200 (sm_90) and B200 (sm_100) 227 KiB.
LIMITS = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}
OPS = ("attention_gate", "agreement")
_POINTEE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64"}


def _module(op: str):
    return importlib.import_module(f"rdfer.kernels.{op}")


def signature(job) -> tuple[dict, dict, dict]:
    """Triton's signature, constexprs and attributes for a launch, specialised as the JIT specialises a run:
    tensors 16-byte aligned, integers equal to 1 as constants, integers divisible by 16 marked so."""
    sig, constexprs, attrs = {}, dict(job.constexprs), {}
    for i, (name, value) in enumerate(zip(job.kernel.arg_names, job.args, strict=False)):  # constexprs follow
        if isinstance(value, torch.Tensor | torch.dtype):
            sig[name] = "*" + _POINTEE[value.dtype if isinstance(value, torch.Tensor) else value]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            sig[name] = "u1"
        elif isinstance(value, int) and value == 1:
            sig[name], constexprs[name] = "constexpr", 1
        elif isinstance(value, int):
            sig[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32"
    sig.update({name: "constexpr" for name in job.constexprs})
    return sig, constexprs, attrs


def compile_one(task: tuple) -> int | str:
    """task = (op, config, stages, launch index, arch) -> shared bytes, or the error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    op, config, stages, launch_index, arch = task
    job = _module(op).example_jobs(config, stages)[launch_index]
    try:
        sig, constexprs, attrs = signature(job)
        source = ASTSource(fn=job.kernel, signature=sig, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=job.compile_options())
        return int(compiled.metadata.shared)
    except Exception as error:  # reported in the table; the run fails at the end
        return f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}"


def rdfer_configs(op: str) -> set:
    """The configurations RDFER's default model launches: these must never fall back."""
    module = _module(op)
    if op == "agreement":
        return set(module.configurations())
    from rdfer.config import ModelConfig

    m = ModelConfig()
    dtypes = (torch.float32, torch.bfloat16)
    head_dim = 2 * m.lstm_hidden // m.heads
    lengths = (m.synopsis_frames, m.clips)
    return {module.launch_config(n, head_dim, q, x) for n in lengths for q in dtypes for x in dtypes}


def _sizes(results: dict, op: str, index: int, stages: int, arch: int) -> list[int | str]:
    return [b for (o, i, s, _, a), b in results.items() if (o, i, s, a) == (op, index, stages, arch)]


def compile_all(configs: dict[str, list], arches: list[int], workers: int) -> dict[tuple, int | str]:
    """Shared bytes (or the error) per (op, config index, stages, launch index, arch), compiling a shallower
    pipelining only where every launch compiled and one did not fit."""
    from rdfer.kernels._launch import STAGES

    results: dict[tuple, int | str] = {}
    pending = [(op, i, arch) for op, cfgs in configs.items() for i in range(len(cfgs)) for arch in arches]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for stages in STAGES:
            if not pending:
                break
            tasks = [
                (op, i, stages, j, arch)
                for op, i, arch in pending
                for j in range(len(_module(op).example_jobs(configs[op][i], stages)))
            ]
            print(f"num_stages={stages}: compiling {len(tasks)} kernels", file=sys.stderr, flush=True)
            jobs = [(op, configs[op][i], stages, j, arch) for op, i, stages, j, arch in tasks]
            results.update(zip(tasks, pool.map(compile_one, jobs, chunksize=1), strict=True))
            sizes = {key: _sizes(results, *key[:2], stages, key[2]) for key in pending}
            pending = [
                key
                for key in pending
                if all(isinstance(b, int) for b in sizes[key]) and max(sizes[key]) > LIMITS[key[2]]
            ]
    return results


def decide(results: dict, op: str, index: int, arch: int) -> tuple[int | None, int]:
    """The dispatch's decision for one configuration on one arch: (stages or None, the last need seen)."""
    from rdfer.kernels._launch import choose_stages

    def need(stages: int) -> int:
        sizes = _sizes(results, op, index, stages, arch)
        return max(sizes) if sizes and all(isinstance(b, int) for b in sizes) else sys.maxsize

    return choose_stages(need, LIMITS[arch])


def print_table(configs: dict[str, list], results: dict) -> None:
    print(f"{'kernel':<10} {'config':<44} {'arch':<7} {'stages':>6} {'shared B':>9} {'limit B':>8}  fits")
    order = sorted(results, key=lambda t: (t[0], t[1], t[4], -t[2], t[3]))  # op, config, arch, deepest first
    for op, i, stages, j, arch in order:
        size = results[op, i, stages, j, arch]
        name = _module(op).example_jobs(configs[op][i], stages)[j].name
        fits = "COMPILE ERROR " + size if isinstance(size, str) else ("yes" if size <= LIMITS[arch] else "no")
        shown = "-" if isinstance(size, str) else size
        config = str(configs[op][i])
        print(f"{name:<10} {config:<44} sm_{arch:<4} {stages:>6} {shown:>9} {LIMITS[arch]:>8}  {fits}")


def judge(configs: dict[str, list], results: dict, arches: list[int]) -> tuple[list[str], list[str]]:
    """(failures, fallbacks): what makes the run fail, and the configurations that take the twin."""
    failures, fallbacks = [], []
    for op, cfgs in configs.items():
        required = rdfer_configs(op)
        for i, cfg in enumerate(cfgs):
            for arch in arches:
                where = f"{op} [{cfg}] on sm_{arch}"
                stages, needed = decide(results, op, i, arch)
                if any(
                    isinstance(b, str) for (o, ci, *_, a), b in results.items() if (o, ci, a) == (op, i, arch)
                ):
                    failures.append(f"{where}: does not compile")
                elif stages is None:
                    fallbacks.append(
                        f"{where}: needs {needed} B of shared memory at the shallowest pipelining"
                    )
                    if cfg in required:
                        failures.append(f"{where}: one of RDFER's own shapes would fall back to the twin")
                elif needed > LIMITS[arch]:
                    failures.append(
                        f"{where}: the dispatch would launch {needed} B over the {LIMITS[arch]} B limit"
                    )
    return failures, fallbacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", choices=sorted(LIMITS), default=sorted(LIMITS))
    parser.add_argument("--op", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--rdfer-shapes", action="store_true", help="only the configurations RDFER launches")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    configs = {op: _module(op).configurations() for op in args.op}
    if args.rdfer_shapes:
        configs = {op: [c for c in cfgs if c in rdfer_configs(op)] for op, cfgs in configs.items()}
    results = compile_all(configs, args.arch, args.jobs)
    print_table(configs, results)
    failures, fallbacks = judge(configs, results, args.arch)
    print(f"\n{len(results)} kernels compiled in {time.perf_counter() - start:.0f} s ({args.jobs} processes)")
    print("\nFalls back to the PyTorch twin:" if fallbacks else "\nNothing falls back to the PyTorch twin.")
    print("\n".join(f"  {line}" for line in fallbacks))
    if failures:
        print("\nFAILED:\n" + "\n".join(f"  {line}" for line in failures), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
