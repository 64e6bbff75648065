#!/usr/bin/env bash
# The GPU check: everything only a GPU can show, in one command of at most ~8 minutes, on a machine with torch,
# Triton, nvcc and pytest but no DALI and no PyAV (the lent H100/H200). Run it from the repository root:
#
#     bash bench/gpu_check.sh            # on the GPU machine: results in ${OUT:-bench/results}/<date>-<device>/
#     bash bench/gpu_check.sh --dry-run  # anywhere (no GPU needed): the same steps at toy sizes, to test the script
#
# Steps, each time-boxed so one slow step cannot eat the others' minutes:
#   1. build rdfer._C with CUDA for this GPU's architecture only (pip install --no-build-isolation --no-deps -e .)
#   2. every `cuda`-marked test (the fast paths held to their twins on the GPU, the GPU frame cache, the step
#      with zero host synchronisations: tests/test_step.py)
#   3. the benchmarks (python -m pytest bench/ --benchmark-only): ops vs twins, loaders, the training step
#   4. end to end: a DFEW-shaped SynthDFER (2,100 train / 525 test clips, T = 64 at 112x112) trained with the
#      dfew config (ResNet-18, B = 128, bf16) for 3 epochs from the frame cache: training clips/s per epoch
# It writes env.txt, build.log, tests.log, bench.log, bench.json, train.log, metrics.jsonl and summary.md (at
# most 8 files: what a device call brings back) into one folder; copy it to bench/results/ and commit it.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0; [ "${1:-}" = "--dry-run" ] && dry=1
py=${PYTHON:-python3}
device=$("$py" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" \
         | tr ' ' '-' | tr -cd 'A-Za-z0-9._-')
base=${OUT:-bench/results}
[ $dry = 1 ] && base=${OUT:-$(mktemp -d)}  # a dry run's results are not results
res="$base/$(date +%F)-${device}"
mkdir -p "$res"
work=$(mktemp -d)
export RDFER_CACHE="$work/cache" RDFER_FRAME_CACHE="$work/frames" PYTHONUNBUFFERED=1
start=$SECONDS
step() { echo "== $1 ($((SECONDS - start)) s)"; }

step "environment"
{
    echo "command: bash bench/gpu_check.sh $*"
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$py" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    "$py" -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not installed"
    nvcc --version 2>/dev/null | tail -n 1 || echo "nvcc: not found"
    git log -1 --format='rdfer commit %H %s' 2>/dev/null
    nproc | sed 's/^/cpu cores /'
} > "$res/env.txt" 2>&1
cat "$res/env.txt"

step "1. build rdfer._C"
if [ $dry = 1 ]; then
    echo "dry run: the installed build is used" > "$res/build.log"
else
    arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
    t0=$SECONDS
    # The alias would win over TORCH_CUDA_ARCH_LIST: unset, so this GPU's architecture is the one built.
    env -u RDFER_CUDA_ARCHS TORCH_CUDA_ARCH_LIST="$arch" timeout 240 "$py" -m pip install -v --no-build-isolation --no-deps -e . > "$res/build.log" 2>&1
    echo "build: exit $? in $((SECONDS - t0)) s for sm_${arch/./}" | tee -a "$res/build.log"
fi
"$py" .ci/check_extension.py CPU $([ $dry = 1 ] || echo CUDA) 2>&1 | tee -a "$res/build.log"

step "2. cuda-marked tests"
# Test modules that import PyAV at the top cannot be collected there: the others still run.
timeout 150 "$py" -m pytest -q -m cuda -p no:cacheprovider --continue-on-collection-errors tests/ \
    > "$res/tests.log" 2>&1
echo "cuda tests: exit $?" | tee -a "$res/tests.log"
tail -n 3 "$res/tests.log"

step "3. benchmarks"
# One file at a time, each with its own time box, so one slow file cannot take the others' minutes.
benches=("bench_resample.py 45" "bench_agreement.py 45" "bench_attention_gate.py 60" "bench_loader.py 60" "bench_step.py 150")
[ $dry = 1 ] && benches=("bench_step.py 150")
: > "$res/bench.log"
for entry in "${benches[@]}"; do
    read -r file limit <<< "$entry"
    args=(--benchmark-only --benchmark-json="$work/${file%.py}.json")
    [ $dry = 1 ] && args=(--benchmark-disable)
    timeout "$limit" "$py" -m pytest -q -p no:cacheprovider "bench/$file" "${args[@]}" >> "$res/bench.log" 2>&1
    echo "$file: exit $?" | tee -a "$res/bench.log"
done
"$py" - "$work" "$res/bench.json" <<'EOF'
import json, sys
from pathlib import Path
runs = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("bench_*.json")) if p.stat().st_size]
merged = {**(runs[0] if runs else {}), "benchmarks": [b for r in runs for b in r.get("benchmarks", [])]}
Path(sys.argv[2]).write_text(json.dumps(merged, indent=1))
EOF
grep -A8 -E "^(training step|clip loaders|gather|agreement|attention)" "$res/bench.log" | head -n 60

step "4. end to end: DFEW-shaped SynthDFER, dfew config"
if [ $dry = 1 ]; then per=(4 2); cfg=(--config quick optim.epochs=2); else per=(300 75); cfg=(--config dfew --epochs 3); fi
"$py" -m rdfer.data synth --preset dfew-shaped --out "$work/synth" --train-per-class "${per[0]}" \
    --test-per-class "${per[1]}" --no-progress > "$res/train.log" 2>&1
timeout 240 "$py" -m rdfer.train "${cfg[@]}" --dataset synthetic --root "$work/synth" --out "$work/run" \
    --no-progress data.num_frames=64 data.image_size=112 >> "$res/train.log" 2>&1
echo "train: exit $?" | tee -a "$res/train.log"
cp "$work/run/metrics.jsonl" "$res/" 2>/dev/null

step "summary"
"$py" - "$res" <<'EOF' | tee "$res/summary.md"
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
print(f"# GPU check, {res.name}\n")
print("```\n" + (res / "env.txt").read_text().strip() + "\n```\n")
for name in ("build.log", "tests.log", "bench.log", "train.log"):
    lines = (res / name).read_text().splitlines() if (res / name).exists() else ["(missing)"]
    print(f"- {name}: {lines[-1] if lines else '(empty)'}")
metrics = res / "metrics.jsonl"
if metrics.exists():
    print("\n| epoch | train clips/s | seconds | test WAR |\n|---|---|---|---|")
    for row in map(json.loads, metrics.read_text().splitlines()):
        n = row.get("train_clips", 0)
        print(f"| {row['epoch']} | {n / row['seconds']:.0f} | {row['seconds']:.1f} | {row.get('test_war', float('nan')):.3f} |")
bench = res / "bench.json"
if bench.exists() and bench.stat().st_size:
    print("\n| benchmark | min ms | extra |\n|---|---|---|")
    for b in json.loads(bench.read_text()).get("benchmarks", []):
        print(f"| {b['name']} | {1e3 * b['stats']['min']:.3f} | {b.get('extra_info', {})} |")
EOF
rm -rf "$work"
step "done"
