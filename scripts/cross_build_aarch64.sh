#!/usr/bin/env bash
# Cross-compile deltaonnx's CPU op library for 64-bit ARM Linux (aarch64) on an x86-64 Debian/Ubuntu host,
# and with --example also the C++ example against ONNX Runtime's aarch64 library (from PyPI's aarch64 wheel).
#
#   apt-get install g++-aarch64-linux-gnu                  # the cross compiler
#   apt-get install qemu-user libc6-arm64-cross            # only to run the results on this host
#   scripts/cross_build_aarch64.sh [--example] [--ort-version X.Y.Z] [BUILD_DIR]
#
# BUILD_DIR (default: build-aarch64) receives
#   ops/libdeltaonnx_ops.so                      the op library (copy it to the board)
#   onnxruntime/libonnxruntime.so.X.Y.Z          ONNX Runtime for aarch64 (--example)
#   example/deltaonnx_video                      the C++ example (--example; finds libonnxruntime through its rpath)
# On this host, run aarch64 programs with:  qemu-aarch64 -L /usr/aarch64-linux-gnu PROGRAM ARGS...
#
# Environment: ORT_INCLUDE_DIR (ONNX Runtime's C/C++ headers; default: scripts/fetch_ort_headers.sh finds or
# fetches them), PYTHON (the interpreter whose pip downloads the wheel; default python3), CROSS_PREFIX
# (default aarch64-linux-gnu-), CROSS_SYSROOT (default /usr/aarch64-linux-gnu).
# Exit status 3: the onnxruntime wheel could not be downloaded.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
with_example=0
ort_version=""
build_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --example) with_example=1 ;;
    --ort-version) ort_version=${2:?--ort-version needs a value}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "cross_build_aarch64: unknown option $1" >&2; exit 2 ;;
    *) build_dir=$1 ;;
  esac
  shift
done
build_dir=$(mkdir -p "${build_dir:-build-aarch64}" && cd "${build_dir:-build-aarch64}" && pwd)
python=${PYTHON:-python3}
prefix=${CROSS_PREFIX:-aarch64-linux-gnu-}
sysroot=${CROSS_SYSROOT:-/usr/aarch64-linux-gnu}
toolchain="$repo/cmake/toolchains/aarch64-linux-gnu.cmake"
jobs=$(nproc 2>/dev/null || echo 2)

if ! command -v "${prefix}g++" >/dev/null; then
  echo "cross_build_aarch64: ${prefix}g++ not found; Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu" >&2
  exit 1
fi
include=${ORT_INCLUDE_DIR:-$(bash "$here/fetch_ort_headers.sh")}
cross=(-DCMAKE_TOOLCHAIN_FILE="$toolchain" -DDELTAONNX_CROSS_PREFIX="$prefix" -DDELTAONNX_CROSS_SYSROOT="$sysroot"
       -DORT_INCLUDE_DIR="$include")

echo "== op library -> $build_dir/ops"
cmake -S "$repo" -B "$build_dir/ops" "${cross[@]}" -DDELTAONNX_PYTHON=OFF -DDELTAONNX_CUDA=OFF >/dev/null
cmake --build "$build_dir/ops" --target deltaonnx_ops -j "$jobs" >/dev/null
echo "$build_dir/ops/libdeltaonnx_ops.so"

if [ "$with_example" = 1 ]; then
  if [ -z "$ort_version" ]; then  # the same ORT as this host's Python, so outputs can be compared
    ort_version=$("$python" -c "import onnxruntime; print(onnxruntime.__version__)" 2>/dev/null) || {
      echo "cross_build_aarch64: pass --ort-version (no onnxruntime in $python to take it from)" >&2; exit 1; }
  fi
  ort_dir="$build_dir/onnxruntime"
  library=$(ls "$ort_dir"/libonnxruntime.so."$ort_version" 2>/dev/null || true)
  if [ -z "$library" ]; then
    echo "== onnxruntime $ort_version for aarch64 (PyPI wheel) -> $ort_dir"
    mkdir -p "$ort_dir/wheel"
    # Any Python tag will do: only the C library inside is used. Newer wheels are manylinux_2_28, older 2014.
    "$python" -m pip download --quiet "onnxruntime==$ort_version" --no-deps --only-binary=:all: \
      --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \
      -d "$ort_dir/wheel" || {
        echo "cross_build_aarch64: could not download onnxruntime==$ort_version for aarch64 from PyPI" >&2; exit 3; }
    "$python" - "$ort_dir" <<'EOF'
import glob, os, sys, zipfile
ort_dir = sys.argv[1]
wheel = sorted(glob.glob(os.path.join(ort_dir, "wheel", "onnxruntime-*aarch64*.whl")))[-1]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if os.path.basename(name).startswith("libonnxruntime.so."):
            with archive.open(name) as src, open(os.path.join(ort_dir, os.path.basename(name)), "wb") as dst:
                dst.write(src.read())
EOF
    library=$(ls "$ort_dir"/libonnxruntime.so."$ort_version")
  fi
  echo "$library"
  echo "== C++ example -> $build_dir/example"
  cmake -S "$repo/examples/cpp" -B "$build_dir/example" "${cross[@]}" -DONNXRUNTIME_LIBRARY="$library" \
    -DDELTAONNX_EXAMPLE_OPENCV=OFF >/dev/null
  cmake --build "$build_dir/example" -j "$jobs" >/dev/null
  echo "$build_dir/example/deltaonnx_video"
fi
