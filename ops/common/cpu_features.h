// CPU features detected once, for choosing the SIMD variant of the kernels (see kernel_table.h).
#pragma once
#include <string>

namespace deltaonnx {

struct CpuFeatures {
  bool avx2 = false;      // AVX2 + FMA + OS support for YMM state
  bool avx512 = false;    // AVX-512 F/BW/VL/DQ + OS support for ZMM state
  bool avx512_vnni = false;
  bool neon = false;      // aarch64 Advanced SIMD (always present there)
  std::string summary() const;
};

const CpuFeatures& cpu_features();

}  // namespace deltaonnx
