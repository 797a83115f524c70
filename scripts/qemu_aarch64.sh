#!/usr/bin/env bash
# Run an aarch64 Linux program on an x86-64 host with qemu-user, e.g. the cross-built C++ example:
#
#   apt-get install qemu-user libc6-arm64-cross
#   scripts/qemu_aarch64.sh build-aarch64/example/deltaonnx_video --model m.delta.onnx \
#       --ops build-aarch64/ops/libdeltaonnx_ops.so --raw frames.f32
#
# Why not plain `qemu-aarch64 -L /usr/aarch64-linux-gnu`: qemu-user 7.2 (Debian 12) shows the program the host's
# x86 /proc/cpuinfo, and ONNX Runtime's CPU detection (the cpuinfo library) crashes on it with a segmentation fault.
# This script runs qemu with a private root that links to the target's libraries (-L) and adds a /proc/cpuinfo
# in the aarch64 format (qemu looks files up under -L first). The CPU is a Cortex-A72 (Raspberry Pi 4): NEON,
# no dot product, no fp16 arithmetic.
#
# Environment: QEMU_CPU (default cortex-a72), CROSS_SYSROOT (default /usr/aarch64-linux-gnu).
set -euo pipefail
if [ $# -lt 1 ]; then sed -n '2,13p' "$0"; exit 2; fi
sysroot=${CROSS_SYSROOT:-/usr/aarch64-linux-gnu}
if ! command -v qemu-aarch64 >/dev/null; then
  echo "qemu_aarch64: qemu-aarch64 not found; Debian/Ubuntu: apt-get install qemu-user" >&2; exit 127
fi
if [ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ]; then
  echo "qemu_aarch64: no aarch64 C library in $sysroot; Debian/Ubuntu: apt-get install libc6-arm64-cross" >&2; exit 127
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
for entry in "$sysroot"/*; do ln -s "$entry" "$root/"; done
mkdir "$root/proc"
present=$(cat /sys/devices/system/cpu/present 2>/dev/null || echo 0)  # e.g. 0-3 or 0,2-5
for range in ${present//,/ }; do
  for ((cpu = ${range%-*}; cpu <= ${range#*-}; cpu++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
  done
done > "$root/proc/cpuinfo"

status=0
qemu-aarch64 -cpu "${QEMU_CPU:-cortex-a72}" -L "$root" "$@" || status=$?
exit "$status"
