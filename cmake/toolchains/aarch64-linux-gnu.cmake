# Cross-compile for 64-bit ARM Linux (aarch64) with Debian's GNU cross toolchain:
#   apt-get install g++-aarch64-linux-gnu            (qemu-user + libc6-arm64-cross to run the result here)
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake \
#         -DDELTAONNX_PYTHON=OFF -DDELTAONNX_CUDA=OFF
# Another GNU cross toolchain (Yocto SDK, Linaro, Buildroot): pass -DDELTAONNX_CROSS_PREFIX=/path/bin/aarch64-xxx-
# and -DDELTAONNX_CROSS_SYSROOT=/path/to/sysroot.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(DELTAONNX_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the cross compiler's tools")
set(DELTAONNX_CROSS_SYSROOT "/usr/aarch64-linux-gnu" CACHE PATH "Target libraries (Debian: libc6-arm64-cross)")

set(CMAKE_C_COMPILER "${DELTAONNX_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${DELTAONNX_CROSS_PREFIX}g++")

# Libraries and packages come from the target's root only; headers may also come from the host, because
# ONNX Runtime's C/C++ headers (and other header-only code) are the same for every architecture.
set(CMAKE_FIND_ROOT_PATH "${DELTAONNX_CROSS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)

# Lets ctest and add_test run aarch64 programs on an x86 host (Debian: qemu-user).
find_program(DELTAONNX_QEMU_AARCH64 qemu-aarch64)
if(DELTAONNX_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${DELTAONNX_QEMU_AARCH64};-L;${DELTAONNX_CROSS_SYSROOT}")
endif()
