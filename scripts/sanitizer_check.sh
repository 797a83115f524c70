#!/usr/bin/env bash
# The sanitizer job (issue 17): builds the CPU op library and the _native module with AddressSanitizer and
# UBSan in a build directory of their own, then runs the tests marked `sanitizer` (every op and engine path:
# DeltaConv GEMM / 1x1 / depthwise / grouped / NCHWc dense, DeltaPool, DeltaMapUnion, dropped references, change
# maps, DeltaSession) against that build. Any report fails the run.
#
#   bash scripts/sanitizer_check.sh [extra pytest arguments]
#
# DELTAONNX_SANITIZE_BUILD_DIR (default build/sanitize) holds the build; a second run rebuilds incrementally.
# Needs g++ (its libasan/libubsan), cmake, and the test requirements (pip install ".[test]").
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python=${PYTHON:-python}
build=${DELTAONNX_SANITIZE_BUILD_DIR:-build/sanitize}
mkdir -p "$build"
build=$(cd "$build" && pwd)

# pybind11's CMake files: present where the package was built without isolation; installed here otherwise.
if ! pybind11_dir=$("$python" -m pybind11 --cmakedir 2>/dev/null); then
  "$python" -m pip install -q "pybind11>=2.12"
  pybind11_dir=$("$python" -m pybind11 --cmakedir)
fi

cmake -S . -B "$build/cmake" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DDELTAONNX_SANITIZE=ON -DDELTAONNX_CUDA=OFF \
  -DPython_EXECUTABLE="$(command -v "$python")" -Dpybind11_DIR="$pybind11_dir" >"$build/configure.log"
cmake --build "$build/cmake" --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" --target deltaonnx_ops _native

# A package tree whose compiled parts are the sanitized ones: the sources linked, the build's files beside them.
site="$build/site"
rm -rf "$site"
mkdir -p "$site/deltaonnx/lib"
for f in "$repo"/python/deltaonnx/*; do ln -s "$f" "$site/deltaonnx/$(basename "$f")"; done
ln -s "$repo/graph_passes" "$site/deltaonnx/graph_passes"
ln -s "$build"/cmake/_native*.so "$site/deltaonnx/"
ln -s "$build/cmake/libdeltaonnx_ops.so" "$site/deltaonnx/lib/"

# The interpreter is not instrumented: libasan must be loaded first, and libstdc++ with it, or ASan's
# __cxa_throw interceptor finds no real __cxa_throw and every C++ exception aborts.
libasan=$(g++ -print-file-name=libasan.so)
libstdcxx=$(g++ -print-file-name=libstdc++.so)
for lib in "$libasan" "$libstdcxx"; do
  [ -f "$lib" ] || { echo "sanitizer_check: $lib not found (g++'s sanitizer runtime)" >&2; exit 1; }
done

export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export DELTAONNX_LIBRARY_DIR="$site/deltaonnx/lib"
export DELTAONNX_SANITIZED=1  # tests/conftest.py checks that the sanitized build is the one imported
# Reports go to files (pytest captures stderr, and an aborted process never shows what it captured); child
# processes the tests start inherit all of this.
reports="$build/reports"
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
status=0
LD_PRELOAD="$libasan $libstdcxx" "$python" -m pytest -q -p no:cacheprovider -m sanitizer "$@" tests || status=$?
if compgen -G "$reports/*" >/dev/null; then
  for report in "$reports"/*; do echo "== $report"; cat "$report"; done
  echo "sanitizer_check: the sanitizers reported the findings above" >&2
  exit 1
fi
exit "$status"
