#include "delta_conv/cpu/panel_plan.h"

#include <algorithm>

namespace deltaonnx {

InteriorRange interior_of(const Axis& a) {
  // o * stride - pad_begin >= 0 and o * stride - pad_begin + (kernel - 1) * dilation <= in - 1
  const int64_t lo = std::min(a.out, (a.pad_begin + a.stride - 1) / a.stride);
  const int64_t last = a.in - 1 + a.pad_begin - (a.kernel - 1) * a.dilation;  // the largest o * stride allowed
  const int64_t hi = last < 0 ? lo : std::max(lo, std::min(a.out, last / a.stride + 1));
  return {lo, hi};
}

namespace {

// Splits [0, width) into chunks of at most nr pixels made of whole vectors where possible, spread evenly
// (160 pixels with 48-pixel tiles of 16-pixel vectors: 48, 48, 32, 32 rather than 48, 48, 48, 16).
template <typename Emit>
void split_even(int64_t width, int64_t nr, int64_t vec, Emit emit) {
  const int64_t vectors = (width + vec - 1) / vec, per_tile = std::max<int64_t>(1, nr / vec);
  const int64_t tiles = (vectors + per_tile - 1) / per_tile;
  int64_t x = 0;
  for (int64_t t = 0; t < tiles && x < width; ++t) {
    const int64_t v = vectors / tiles + (t < vectors % tiles ? 1 : 0);
    const int64_t n = std::min(width - x, v * vec);
    emit(x, n);
    x += n;
  }
}

// Fills panels of one kind with pieces, nr pixels per panel (a piece may continue in the next panel).
class Gatherer {
 public:
  Gatherer(PanelPlan& plan, PanelKind kind, int64_t nr) : plan_(plan), kind_(kind), nr_(nr), first_(plan.pieces.size()) {}
  // len outputs of one row from output position out (input origin src, `step` input columns apart; a step
  // above 1 puts every pixel in a piece of its own, since a piece's input is contiguous).
  void add(int64_t src, int64_t out, int64_t len, int64_t step) {
    while (len > 0) {
      const int64_t take = std::min(step == 1 ? len : int64_t{1}, nr_ - used_);
      plan_.pieces.push_back({src, take, used_});
      plan_.out_pos.push_back(out);
      used_ += take;
      src += take * step;
      out += take;
      len -= take;
      if (used_ == nr_) close();
    }
  }
  void close() {
    if (used_ == 0) return;
    const int64_t end = static_cast<int64_t>(plan_.pieces.size());
    plan_.panels.push_back({kind_, 0, used_, static_cast<int64_t>(first_), end});
    first_ = static_cast<size_t>(end);
    used_ = 0;
  }

 private:
  PanelPlan& plan_;
  PanelKind kind_;
  int64_t nr_, used_ = 0;
  size_t first_;
};

}  // namespace

void plan_panels(const Window2D& w, const uint8_t* flags, int64_t nr, int64_t vec, int64_t raster_width,
                 bool in_raster, PanelPlan& plan) {
  plan.panels.clear();
  plan.pieces.clear();
  plan.out_pos.clear();
  plan.runs.clear();
  plan.interior.clear();
  plan.border.clear();
  const int64_t Ho = w.y.out, Wo = w.x.out, W = w.x.in;
  const InteriorRange iy = in_raster ? InteriorRange{0, Ho} : interior_of(w.y);
  const InteriorRange ix = in_raster ? InteriorRange{0, Wo} : interior_of(w.x);
  plan.flat = raster_width == Wo && ix.lo == 0 && ix.hi == Wo;
  // Runs in run space (row y, columns x; flat: one row over the plane), cut into their interior part and the
  // border parts around it.
  mask_runs(flags, plan.flat ? 1 : Ho, plan.flat ? Ho * Wo : Wo, plan.runs);
  for (const RowRun& r : plan.runs) {
    const bool row_inside = plan.flat || (r.y >= iy.lo && r.y < iy.hi);
    const int64_t lo = plan.flat ? iy.lo * Wo : row_inside ? ix.lo : r.x_end;
    const int64_t hi = plan.flat ? iy.hi * Wo : row_inside ? ix.hi : r.x_end;
    if (r.x_begin < lo) plan.border.push_back({r.y, r.x_begin, std::min(r.x_end, lo)});
    if (std::max(r.x_begin, lo) < std::min(r.x_end, hi))
      plan.interior.push_back({r.y, std::max(r.x_begin, lo), std::min(r.x_end, hi)});
    if (r.x_end > hi) plan.border.push_back({r.y, std::max(r.x_begin, hi), r.x_end});
  }
  // Output position of run-space (y, x), and where a gathered piece starting there reads: its raster position,
  // or the input origin of its window (a column stride above 1 apart per pixel).
  auto out_of = [&](int64_t y, int64_t x) { return plan.flat ? x : y * Wo + x; };
  auto origin_of = [&](int64_t out) {
    if (in_raster) return (out / Wo) * raster_width + out % Wo;
    return ((out / Wo) * w.y.stride - w.y.pad_begin) * W + (out % Wo) * w.x.stride - w.x.pad_begin;
  };
  const int64_t step = in_raster ? 1 : w.x.stride;
  // Gathered pieces stay within an output row (their input is contiguous along one row only).
  auto gather_run = [&](Gatherer& g, int64_t y, int64_t x0, int64_t x1) {
    for (int64_t out = out_of(y, x0), end = out_of(y, x1); out < end;) {
      const int64_t len = std::min(end - out, Wo - out % Wo);
      g.add(origin_of(out), out, len, step);
      out += len;
    }
  };
  Gatherer gathered(plan, PanelKind::kGathered, nr);
  if (Wo < nr && !plan.flat) {  // a map narrower than a tile: only the recomputed pixels, packed
    for (const RowRun& r : plan.interior) gather_run(gathered, r.y, r.x_begin, r.x_end);
  } else {
    // Runs joined across short gaps (computing a few pixels more, never storing them, costs less than more
    // micro kernel calls) are tiled in place when long; short ones (scattered changes) would leave most lanes
    // of a tile idle, so their exact runs are gathered instead.
    constexpr int64_t kGap = 8;
    const int64_t min_raster_run = 2 * vec;
    const std::vector<RowRun>& runs = plan.interior;
    for (size_t i = 0; i < runs.size();) {
      const size_t i0 = i;
      RowRun r = runs[i++];
      while (i < runs.size() && runs[i].y == r.y && runs[i].x_begin - r.x_end < kGap) r.x_end = runs[i++].x_end;
      if (r.x_end - r.x_begin >= min_raster_run) {
        const int64_t p = plan.flat ? r.x_begin : r.y * raster_width + r.x_begin;
        split_even(r.x_end - r.x_begin, nr, vec,
                   [&](int64_t x, int64_t n) { plan.panels.push_back({PanelKind::kRaster, p + x, n}); });
        continue;
      }
      for (size_t j = i0; j < i; ++j) gather_run(gathered, runs[j].y, runs[j].x_begin, runs[j].x_end);
    }
  }
  gathered.close();
  Gatherer border(plan, PanelKind::kBorder, nr);
  for (const RowRun& r : plan.border) gather_run(border, r.y, r.x_begin, r.x_end);
  border.close();
}

}  // namespace deltaonnx
