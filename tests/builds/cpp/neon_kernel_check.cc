// Checks the NEON kernel table (ops/common/neon_kernels.cc, aarch64) against the portable one and against a
// sequential-FMA reference, bit for bit, including GEMM tails of every length with B rows that end at an unreadable
// page. Built and run under qemu-user by tests/builds/test_cross_build.py. Exit 77: this build has no NEON table.
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/activation.h"
#include "common/kernel_table.h"

using namespace deltaonnx;

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { if (failures++ < 20) { std::printf(__VA_ARGS__); std::printf("\n"); } } } while (0)

// A float array whose last element sits just before a PROT_NONE page: reading past it faults.
struct GuardedRow {
  char* base = nullptr; size_t page = 0;
  float* data(size_t n) { return reinterpret_cast<float*>(base + page) - n; }
  GuardedRow() {
    page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    base = static_cast<char*>(mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    mprotect(base + page, page, PROT_NONE);
  }
};

int main() {
  const KernelTable* neon = kernels_named("neon");
  const KernelTable& scalar = scalar_kernel_table();
  if (!neon) { std::printf("no neon table in this build\n"); return 77; }
  std::printf("default table: %s, neon mr=%d nr=%d\n", kernels().name, neon->gemm_mr, neon->gemm_nr);
  CHECK(std::strcmp(kernels().name, "neon") == 0, "the default table is %s, not neon", kernels().name);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const int mr = neon->gemm_mr, nr = neon->gemm_nr;

  // GEMM tile and row, every tail length, several depths; the last B row of each case is guarded.
  std::vector<GuardedRow> guards(64);
  for (int depth : {1, 2, 3, 7, 9, 27, 64}) {
    for (int n = 1; n <= nr; ++n) {
      std::vector<float> a(static_cast<size_t>(depth * mr));
      for (float& v : a) v = u(rng);
      std::vector<std::vector<float>> rows(depth, std::vector<float>(n));
      std::vector<const float*> b(depth);
      for (int k = 0; k < depth; ++k) {
        float* dst = k < 64 ? guards[k].data(n) : rows[k].data();
        for (int j = 0; j < n; ++j) dst[j] = u(rng);
        b[k] = dst;
      }
      std::vector<float> c(static_cast<size_t>(mr * nr), -7.f);
      neon->gemm_tile(depth, a.data(), b.data(), n, c.data());
      for (int r = 0; r < mr; ++r)
        for (int j = 0; j < n; ++j) {
          float ref = 0.f;
          for (int k = 0; k < depth; ++k) ref = std::fma(a[k * mr + r], b[k][j], ref);
          CHECK(std::memcmp(&ref, &c[r * nr + j], 4) == 0, "gemm_tile depth %d n %d r %d j %d: %.9g vs %.9g", depth, n, r, j, c[r * nr + j], ref);
        }
      // gemm_tile_store: the same sums, plus bias, through an activation (Relu), stored row by row
      std::vector<float> bias(mr), stored(static_cast<size_t>(mr * (n + 1)), -5.f);
      std::vector<float*> out_rows(mr);
      std::vector<ActivationParams> acts(mr);
      for (int r = 0; r < mr; ++r) {
        bias[r] = u(rng);
        out_rows[r] = stored.data() + r * (n + 1);
        acts[r].kind = r % 2 ? Activation::kRelu : Activation::kNone;
      }
      const int stored_rows = 1 + depth % mr;
      neon->gemm_tile_store(depth, a.data(), b.data(), n, out_rows.data(), stored_rows, bias.data(), acts.data());
      for (int r = 0; r < mr; ++r) {
        for (int j = 0; j < n; ++j) {
          float expected = apply_activation(acts[r], c[r * nr + j] + bias[r]);
          CHECK(r < stored_rows ? std::memcmp(&expected, &out_rows[r][j], 4) == 0 : out_rows[r][j] == -5.f,
                "gemm_tile_store depth %d n %d r %d j %d: %.9g vs %.9g", depth, n, r, j, out_rows[r][j], expected);
        }
        CHECK(out_rows[r][n] == -5.f, "gemm_tile_store wrote past n (depth %d n %d r %d)", depth, n, r);
      }
      // gemm_row against the portable one
      std::vector<float> w(depth);
      for (float& v : w) v = u(rng);
      std::vector<float> o1(n + 1, -3.f), o2(n + 1, -3.f);
      neon->gemm_row(depth, w.data(), b.data(), n, o1.data());
      scalar.gemm_row(depth, w.data(), b.data(), n, o2.data());
      CHECK(std::memcmp(o1.data(), o2.data(), 4 * (n + 1)) == 0, "gemm_row depth %d n %d differs from scalar", depth, n);
      for (int j = 0; j < n; ++j) {
        float ref = 0.f;
        for (int k = 0; k < depth; ++k) ref = std::fma(w[k], b[k][j], ref);
        CHECK(std::memcmp(&ref, &o1[j], 4) == 0, "gemm_row depth %d n %d j %d: %.9g vs %.9g", depth, n, j, o1[j], ref);
      }
    }
  }

  // Change detection and reference update, with NaN, Inf, signed zeros, values at tau.
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 0.f, -0.f, 0.05f, -0.05f, 1e-30f};
  for (int trial = 0; trial < 300; ++trial) {
    const int channels = 1 + trial % 4, plane = 1 + static_cast<int>(rng() % 70);
    const int begin = static_cast<int>(rng() % plane), end = begin + static_cast<int>(rng() % (plane - begin + 1));
    std::vector<float> x(channels * plane), ref(channels * plane);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = u(rng);
      const int mode = static_cast<int>(rng() % 6);
      ref[i] = mode == 0 ? x[i] : mode == 1 ? x[i] + 0.05f : mode == 2 ? specials[rng() % 8] : u(rng);
      if (rng() % 20 == 0) x[i] = specials[rng() % 8];
    }
    const float tau = trial % 3 == 0 ? 0.f : trial % 3 == 1 ? 0.05f : 0.5f;
    std::vector<uint8_t> f1(plane), f2(plane);
    for (int p = 0; p < plane; ++p) f1[p] = f2[p] = rng() % 7 == 0;
    neon->detect_changes(x.data(), ref.data(), channels, plane, begin, end, tau, f1.data());
    scalar.detect_changes(x.data(), ref.data(), channels, plane, begin, end, tau, f2.data());
    CHECK(f1 == f2, "detect_changes trial %d differs", trial);
    for (bool in_place : {false, true}) {
      std::vector<float> o1(x.size(), 9.f), o2(x.size(), 9.f);
      std::vector<float> r1 = ref, r2 = ref;
      neon->update_reference(x.data(), r1.data(), in_place ? r1.data() : o1.data(), channels, plane, begin, end, f1.data());
      scalar.update_reference(x.data(), r2.data(), in_place ? r2.data() : o2.data(), channels, plane, begin, end, f2.data());
      CHECK(std::memcmp(r1.data(), r2.data(), 4 * r1.size()) == 0 && std::memcmp(o1.data(), o2.data(), 4 * o1.size()) == 0,
            "update_reference trial %d in_place %d differs", trial, in_place);
      std::vector<uint8_t> g1(plane, 0), g2(plane, 0);
      std::vector<float> e1 = ref, e2 = ref, p1(x.size(), 9.f), p2(x.size(), 9.f);
      neon->detect_update_exact(x.data(), e1.data(), in_place ? e1.data() : p1.data(), channels, plane, begin, end, g1.data());
      scalar.detect_update_exact(x.data(), e2.data(), in_place ? e2.data() : p2.data(), channels, plane, begin, end, g2.data());
      CHECK(g1 == g2 && std::memcmp(e1.data(), e2.data(), 4 * e1.size()) == 0 && std::memcmp(p1.data(), p2.data(), 4 * p1.size()) == 0,
            "detect_update_exact trial %d in_place %d differs", trial, in_place);
    }
  }
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
