#!/usr/bin/env bash
# Builds gsmt_fast._C with AddressSanitizer + UndefinedBehaviorSanitizer (the CPU code; GSMT_WITH_CUDA=OFF) into
# build/sanitize/ -- a wheel, unpacked into build/sanitize/site, so the editable install in .venv stays untouched --
# and runs the native post-processing tests and their property-based fuzzing against that copy.
#
#   tests/run_sanitized.sh [extra pytest arguments]      (PYTHON=... to use another interpreter)
#
# Python itself is not instrumented, so libasan is preloaded; leak detection is off (CPython and NumPy keep
# allocations alive until exit by design). Any ASan/UBSan report aborts the run with a non-zero exit status.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$ROOT/build/sanitize"
start=$(date +%s)

rm -rf "$OUT/wheel" "$OUT/site"
mkdir -p "$OUT/wheel"
GSMT_WITH_CUDA=OFF "$PYTHON" -m pip wheel -q --no-build-isolation --no-deps -w "$OUT/wheel" \
  -C cmake.define.GSMT_SANITIZE=ON -C cmake.define.GSMT_WITH_CUDA=OFF -C cmake.build-type=RelWithDebInfo \
  -C install.strip=false -C build-dir="$OUT/cmake" "$ROOT"
"$PYTHON" -m pip install -q --no-deps --no-compile --target "$OUT/site" "$OUT"/wheel/gsmt_fast-*.whl
built=$(date +%s)

# libstdc++ is preloaded too: ASan resolves its __cxa_throw interceptor at start-up, before Python would load it
# (without it the first C++ exception aborts with "real___cxa_throw != 0").
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export LD_PRELOAD
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:alloc_dealloc_mismatch=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd "$ROOT"
"$PYTHON" - "$OUT/site" "$@" <<'PY'
import sys

site = sys.argv[1]
# The editable install puts a finder for gsmt_fast in front of sys.path: drop it so that the sanitized copy is used.
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable_skbc")]
sys.path.insert(0, site)
import gsmt_fast._C  # noqa: E402

assert gsmt_fast._C.__file__.startswith(site), gsmt_fast._C.__file__
print(f"sanitized extension: {gsmt_fast._C.__file__}", flush=True)
import pytest  # noqa: E402

tests = ["tests/test_postprocess_native.py", "tests/test_soft_nms_native.py", "tests/test_fuzz_native.py"]
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not gpu", *tests, *sys.argv[2:]]))
PY
end=$(date +%s)
echo "sanitized build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s"
