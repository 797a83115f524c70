#include "common/kernel_table.h"

#include <cstdlib>
#include <cstring>

#include "common/cpu_features.h"

namespace deltaonnx {

const KernelTable* kernels_named(const char* name) {
  if (std::strcmp(name, "scalar") == 0) return &scalar_kernel_table();
#if defined(DELTAONNX_HAVE_X86_SIMD)
  const CpuFeatures& f = cpu_features();
  if (std::strcmp(name, "avx2") == 0 && f.avx2) return &avx2_kernel_table();
  if (std::strcmp(name, "avx512") == 0 && f.avx512) return &avx512_kernel_table();
#endif
#if defined(DELTAONNX_HAVE_NEON)
  if (std::strcmp(name, "neon") == 0) return &neon_kernel_table();
#endif
  return nullptr;
}

namespace {
const KernelTable& select() {
  if (const char* wanted = std::getenv("DELTAONNX_SIMD")) {
    if (const KernelTable* t = kernels_named(wanted)) return *t;
  }
#if defined(DELTAONNX_HAVE_X86_SIMD)
  const CpuFeatures& f = cpu_features();
  if (f.avx512) return avx512_kernel_table();
  if (f.avx2) return avx2_kernel_table();
#endif
#if defined(DELTAONNX_HAVE_NEON)
  return neon_kernel_table();
#else
  return scalar_kernel_table();
#endif
}
}  // namespace

const KernelTable& kernels() {
  static const KernelTable& table = select();
  return table;
}

}  // namespace deltaonnx
