#!/usr/bin/env bash
# One script for the GPU test machine (docs/DESIGN.md "GPU check": one NVIDIA H100/H200, python3 3.12 with torch
# 2.11 CUDA, triton 3.6, nvcc, cmake, ninja, pybind11, scikit-build-core, onnxruntime; no venv, no internet). Every
# step has its own timeout and the whole run stays under 8.5 minutes; a failed step does not stop the next ones; a
# summary closes the run.
set -uo pipefail

usage() {
  cat <<'EOF'
Usage: bash bench/gpu_check.sh RESULTS_DIR [--dry-run] [--no-build] [--steps LIST]

Steps (each logged to RESULTS_DIR/<step>.log, with its own timeout; total under 8.5 minutes), most important first:
  env               nvidia-smi, python/torch/triton/onnxruntime/nvcc/cmake versions
  build             GSMT_WITH_CUDA=ON python3 -m pip install --no-build-isolation --no-deps -e .
  import            import gsmt_fast._C and print its build_info
  pytest_gpu        python3 -m pytest -m gpu tests (JUnit XML in RESULTS_DIR): CUDA post-processing == CPU,
                    Triton kernels' bf16/fp16 error vs PyTorch's, triton backend == reference
  bench_triton      bench/bench_triton.py: end-to-end triton backend, features on the GPU, batches 1 … 1024
  accuracy          bench/backend_accuracy.py on the synthetic validation splits (data: see below):
                    reference vs torch fp32 vs triton fp32/fp16/bf16 mAP and identical detections
  bench_postprocess bench/bench_postprocess.py (CUDA post-processing throughput)
  bench_kernels     bench/kernels/bench_*.py: each Triton kernel vs eager PyTorch and torch.compile
  bench             bench/run.py --device cuda (Detector.detect from host features, torch and triton backends)
  bench_streaming   bench/bench_streaming.py on cuda, triton backend (the accuracy step's data): per-push latency of
                    one stream and the number of THUMOS-rate streams one process keeps up with (goal 10,000)
  sharded_detect    bench/bench_distributed.py: `torchrun -m gsmt_fast.cli detect` with one rank per GPU (40 s)
Then RESULTS_DIR/summary.txt with PASS/FAIL/TIMEOUT/SKIP per step and the engine's GPU targets (bench/gpu_targets.py:
MET / NOT MET / NOT MEASURED from the JSON the steps wrote); exit status 1 if any step failed.

Data of the accuracy step: .gpu_assets/ when present (git-ignored; build it with `python bench/make_gpu_assets.py`,
seconds), else RESULTS_DIR/assets/, built by the step itself the same way: the validation videos of `gsmt-fast synth
--profile thumos-like|anet-like` (seed 0) and the checkpoints shipped in bench/assets/ (trained on them with
configs/synthetic_{thumos,anet}.yaml).

Options:
  --dry-run   the same steps on a CPU machine: the venv's python (.venv/bin/python when present), the build as a
              wheel with GSMT_WITH_CUDA=OFF in a separate build dir (build/gpu_check_dry; the installed package is
              left alone), the GPU tests (they skip), a quick CPU benchmark on tiny batches. Under ~4 minutes.
  --no-build  skip the build step (use the extension that is already installed)
  --steps LIST  run only these steps (comma-separated names from the list above, e.g. build,import,pytest_gpu);
              the others are reported as SKIP
  -h, --help  this text

Environment: PYTHON (interpreter to use), BENCH_ARGS (extra arguments for bench/run.py), SHARDED_RANKS (rank
             counts of the sharded_detect step, default 1),
             GPU_CHECK_LIMIT_S (overall limit in seconds, default 500; 400 with --dry-run).
EOF
}

RESULTS_DIR=""
DRY_RUN=0
BUILD=1
ONLY=""
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --no-build) BUILD=0 ;;
    --steps=*) ONLY="${arg#--steps=}" ;;
    --steps) ONLY="__next__" ;;
    -*) echo "gpu_check: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) if [ "$ONLY" = "__next__" ]; then ONLY="$arg"; continue; fi
       if [ -n "$RESULTS_DIR" ]; then echo "gpu_check: one RESULTS_DIR only" >&2; exit 2; fi
       RESULTS_DIR="$arg" ;;
  esac
done
if [ -z "$RESULTS_DIR" ]; then usage >&2; exit 2; fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
mkdir -p "$RESULTS_DIR" && RESULTS_DIR="$(cd "$RESULTS_DIR" && pwd)" || exit 2

if [ "$DRY_RUN" = 1 ]; then
  PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo "$REPO/.venv/bin/python" || echo python3 )}"
  LIMIT_S="${GPU_CHECK_LIMIT_S:-400}"
else
  PY="${PYTHON:-python3}"
  LIMIT_S="${GPU_CHECK_LIMIT_S:-500}"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"

START=$(date +%s)
STEPS=()
RESULTS=()
SECONDS_TAKEN=()
FAILED=0

# step NAME TIMEOUT_S CMD...: run CMD with a timeout (shortened to what the overall limit leaves), log to
# RESULTS_DIR/NAME.log, record PASS/FAIL/TIMEOUT, never abort the script.
step() {
  local name="$1" limit="$2"; shift 2
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then skip "$name" "not in --steps"; return; fi
  local left=$(( LIMIT_S - ($(date +%s) - START) - 5 ))
  local t0 status rc
  t0=$(date +%s)
  if [ "$left" -lt 5 ]; then
    status="SKIP (no time left)"
    echo "skipped: the overall limit of ${LIMIT_S} s is used up" > "$RESULTS_DIR/$name.log"
  else
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "== $name (timeout ${limit} s): $*"
    # The steps are shell functions: run them in a child bash (they and the variables they read are exported).
    timeout --kill-after=10 "$limit" bash -c "$*" > "$RESULTS_DIR/$name.log" 2>&1
    rc=$?
    case "$rc" in
      0) status="PASS" ;;
      124|137) status="TIMEOUT (${limit} s)"; FAILED=1 ;;
      *) status="FAIL (exit $rc)"; FAILED=1 ;;
    esac
    tail -n 3 "$RESULTS_DIR/$name.log" | sed 's/^/   | /'
  fi
  STEPS+=("$name"); RESULTS+=("$status"); SECONDS_TAKEN+=("$(( $(date +%s) - t0 ))")
  echo "   -> $status"
}

skip() {
  STEPS+=("$1"); RESULTS+=("SKIP ($2)"); SECONDS_TAKEN+=(0)
  echo "== $1: skipped ($2)"
}

env_info() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  uname -a
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  command -v cmake >/dev/null && cmake --version | head -n 1
  command -v ninja >/dev/null && echo "ninja $(ninja --version)"
  "$PY" - <<'PYEOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
for name in ("triton", "onnxruntime", "pybind11", "scikit_build_core", "numpy", "actionformer"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as e:  # report, do not fail: this step only describes the machine
        print(name, "not importable:", type(e).__name__, e)
PYEOF
}

build() {
  if [ "$DRY_RUN" = 1 ]; then
    # Same build, without CUDA, as a wheel in its own build dir: the venv's editable install stays as it is.
    GSMT_WITH_CUDA=OFF "$PY" -m pip wheel -v --no-build-isolation --no-deps \
      -C build-dir=build/gpu_check_dry -w "$RESULTS_DIR/wheel" .
  else
    GSMT_WITH_CUDA=ON "$PY" -m pip install -v --no-build-isolation --no-deps -e .
  fi
}

import_check() {
  "$PY" - <<'PYEOF'
import gsmt_fast, gsmt_fast._C as C
print("gsmt_fast", gsmt_fast.__version__, gsmt_fast.__file__)
print("build_info", getattr(C, "build_info", "?"))
if hasattr(C, "cuda_device_count"):
    print("cuda_device_count", C.cuda_device_count())
PYEOF
}

pytest_gpu() {
  "$PY" -m pytest -q -m gpu tests -p no:cacheprovider -rs --junitxml="$RESULTS_DIR/pytest_gpu.xml"
  local rc=$?
  if [ "$rc" = 5 ]; then echo "no GPU-marked tests collected"; return 0; fi  # pytest's "no tests": not a failure
  return "$rc"
}

bench() {
  if [ "$DRY_RUN" = 1 ]; then
    # shellcheck disable=SC2086
    "$PY" bench/run.py --quick --device cpu --batches 1,4 --reps 2 --max-reps 3 --target-s 0.3 --budget-s 70 \
      --out "$RESULTS_DIR" --results-md "$RESULTS_DIR/RESULTS_rows.md" ${BENCH_ARGS:-}
  else
    # shellcheck disable=SC2086
    "$PY" bench/run.py --device cuda --backends torch,triton --T 256 --K 20 --batches 1,64,1024 --peers none \
      --target-s 0.3 --budget-s 90 \
      --out "$RESULTS_DIR" --results-md "$RESULTS_DIR/RESULTS_rows.md" ${BENCH_ARGS:-}
  fi
}

bench_postprocess() {
  # Its flags are its author's: pass only those its --help lists.
  local help args=()
  help="$("$PY" bench/bench_postprocess.py --help 2>&1)" || { echo "$help"; return 1; }
  if [ "$DRY_RUN" = 1 ]; then
    grep -q -- "--quick" <<<"$help" && args+=(--quick)
    grep -q -- "--device" <<<"$help" && args+=(--device cpu)
  else
    grep -q -- "--device" <<<"$help" && args+=(--device cuda)
  fi
  # --out: a folder when its help says so, else a file (its table as markdown).
  if grep -q -- "--out" <<<"$help"; then
    if grep -A2 -- "--out" <<<"$help" | grep -qiE "dir|folder"; then args+=(--out "$RESULTS_DIR")
    else args+=(--out "$RESULTS_DIR/bench_postprocess.md"); fi
  fi
  echo "bench/bench_postprocess.py ${args[*]}"
  "$PY" bench/bench_postprocess.py "${args[@]}"
}

bench_triton() {
  if [ "$DRY_RUN" = 1 ]; then "$PY" bench/bench_triton.py --device cpu --out "$RESULTS_DIR"
  else "$PY" bench/bench_triton.py --batches 1,64,256,1024 --seconds 0.5 --out "$RESULTS_DIR"; fi
}

# The accuracy/streaming data: .gpu_assets/ when it came with the call, else built once into RESULTS_DIR/assets/
# (the synthetic validation splits + the checkpoints shipped in bench/assets/; seconds). Prints the folder.
gpu_assets() {
  if [ -d .gpu_assets ]; then echo .gpu_assets; return 0; fi
  if [ ! -f "$RESULTS_DIR/assets/anet.safetensors" ]; then
    "$PY" bench/make_gpu_assets.py --out "$RESULTS_DIR/assets" >&2 || return 1
  fi
  echo "$RESULTS_DIR/assets"
}

accuracy() {
  local runs="reference,torch:fp32,triton:fp32,triton:fp16,triton:bf16" device="cuda" rc=0 assets
  if [ "$DRY_RUN" = 1 ]; then runs="reference,torch:fp32"; device="cpu"; fi
  assets="$(gpu_assets)" || return 1
  "$PY" bench/backend_accuracy.py --data "$assets/thumos" --ckpt "$assets/thumos.safetensors" --tious thumos \
    --runs "$runs" --device "$device" --out "$RESULTS_DIR/accuracy_thumos.json" || rc=1
  "$PY" bench/backend_accuracy.py --data "$assets/anet" --ckpt "$assets/anet.safetensors" --tious anet \
    --runs "$runs" --device "$device" --out "$RESULTS_DIR/accuracy_anet.json" || rc=1
  return "$rc"
}

bench_kernels() {
  local rc=0 f device="cuda"
  [ "$DRY_RUN" = 1 ] && device="cpu"
  mkdir -p "$RESULTS_DIR/kernels"
  for f in bench/kernels/bench_*.py; do
    echo "== $f"
    timeout 60 "$PY" "$f" --device "$device" --out "$RESULTS_DIR/kernels" || { echo "FAILED: $f"; rc=1; }
  done
  return "$rc"
}

# --- sharded detection (docs/SCALING.md) ---------------------------------------------------------------------------
# torchrun with one rank per GPU over a synthetic archive; the detection throughput lands in
# RESULTS_DIR/RESULTS_distributed.md and distributed.json. One GPU here; on a node with N GPUs set SHARDED_RANKS=1,N
# to time the scale-out. The torch backend: within 40 s there is no time for Triton to compile another model's kernels.
sharded_detect() {
  local device="cuda" videos=256
  if [ "$DRY_RUN" = 1 ]; then device="cpu"; videos=12; fi
  "$PY" bench/bench_distributed.py --device "$device" --ranks "${SHARDED_RANKS:-1}" --no-train --no-plain \
    --backend torch \
    --videos "$videos" --chunk-size 128 --results-md "$RESULTS_DIR/RESULTS_distributed.md" \
    --json "$RESULTS_DIR/distributed.json"
}

# --- streaming (docs/STREAMING.md) ------------------------------------------------------------------------------------
bench_streaming() {
  local assets
  assets="$(gpu_assets)" || return 1
  local args=(--ckpt "$assets/thumos.safetensors" --data "$assets/thumos" --skip-memory --fixed-name
              --out "$RESULTS_DIR")
  if [ "$DRY_RUN" = 1 ]; then
    "$PY" bench/bench_streaming.py "${args[@]}" --device cpu --backends torch --latency-snippets 200 \
      --streams 10 --stream-seconds 5
  else
    # 10,000 streams push 8 snippets each per hop (a server reads its sockets in batches) and tick once per hop.
    "$PY" bench/bench_streaming.py "${args[@]}" --device cuda --backends triton --latency-snippets 400 \
      --streams 2000,10000 --stream-seconds 6 --push-snippets 8 --tick-snippets 8
  fi
}

export PY DRY_RUN RESULTS_DIR BENCH_ARGS="${BENCH_ARGS:-}"
export -f env_info build import_check pytest_gpu bench bench_postprocess bench_triton accuracy bench_kernels \
  gpu_assets bench_streaming sharded_detect
echo "gpu_check: repo $REPO, results $RESULTS_DIR, python $PY, dry-run $DRY_RUN, limit ${LIMIT_S} s"
step env 30 env_info
if [ "$BUILD" = 1 ]; then step build 170 build; else skip build "--no-build"; fi
step import 30 import_check
step pytest_gpu 130 pytest_gpu
step bench_triton 100 bench_triton
step accuracy 120 accuracy
if [ -f bench/bench_postprocess.py ]; then step bench_postprocess 50 bench_postprocess
else skip bench_postprocess "bench/bench_postprocess.py not present"; fi
step bench_streaming 60 bench_streaming
step sharded_detect 40 sharded_detect
step bench_kernels 130 bench_kernels
step bench 120 bench

TOTAL=$(( $(date +%s) - START ))
{
  echo "gpu_check summary ($( [ "$DRY_RUN" = 1 ] && echo "dry run on CPU" || echo "GPU" ), $(date -u +%FT%TZ))"
  printf '%-18s %-22s %s\n' step status seconds
  for i in "${!STEPS[@]}"; do
    printf '%-18s %-22s %s\n' "${STEPS[$i]}" "${RESULTS[$i]}" "${SECONDS_TAKEN[$i]}"
  done
  echo "total ${TOTAL} s; logs, JSON and plots in $RESULTS_DIR"
  echo
  "$PY" bench/gpu_targets.py "$RESULTS_DIR" 2>&1
} | tee "$RESULTS_DIR/summary.txt"
exit "$FAILED"
