// How DeltaConv's GEMM engine covers the recomputed outputs of one batch item (docs/design.md#rule-4): long runs
// as raster panels read in place, short runs (scattered changes) packed side by side from the input itself, and
// the outputs whose window leaves the input (the border ring) packed with bounds checks. No input is copied for
// a pixel that is not recomputed: at 10% scattered changes a padded copy of the input cost more than the GEMM.
#pragma once
#include <cstdint>
#include <vector>

#include "common/change_map.h"
#include "common/kernel_table.h"

namespace deltaonnx {

// The outputs along one axis whose every tap reads inside the input: [lo, hi) (lo == hi: none).
struct InteriorRange {
  int64_t lo = 0, hi = 0;
};
InteriorRange interior_of(const Axis& a);

enum class PanelKind : uint8_t {
  kRaster,    // raster positions [p0, p0 + n): position oy * raster_width + ox, every tap one contiguous run
  kGathered,  // pieces read straight from the input (windows inside it)
  kBorder,    // pieces whose windows leave the input: packed with bounds checks
};

// A unit of compute work: raster positions, or pieces [piece_begin, piece_end) of PanelPlan::pieces packed
// side by side (n pixels at most gemm_nr).
struct Panel {
  PanelKind kind;
  int64_t p0, n;
  int64_t piece_begin = 0, piece_end = 0;
};

struct PanelPlan {
  std::vector<Panel> panels;
  // Pieces of gathered and border panels, each within one output row: PackPiece::src is the input offset of the
  // first pixel's window origin, (oy*sy - pad_top) * W + ox*sx - pad_left (kGathered only), or with `in_raster`
  // its raster position; out_pos[i] is that pixel's output position oy * Wo + ox. Gathered pieces read from the
  // input are single pixels when the column stride exceeds 1.
  std::vector<PackPiece> pieces;
  std::vector<int64_t> out_pos;
  // Raster positions run over the plane as one row (runs and panels may cross row ends): every column is
  // interior and the raster is as wide as the output (1-wide kernels).
  bool flat = false;
  std::vector<RowRun> runs, interior, border;  // scratch kept across items
};

// Plans the panels of one batch item for output flags [Ho, Wo] (the recomputed pixels). raster_width: the row
// pitch of the raster raster panels read (at least Wo); nr, vec: the micro kernel's pixels per tile and vector.
// Runs joined across short gaps are rastered in place when long; short ones, and every run of a map narrower
// than a tile, are gathered (nr pixels per panel). in_raster: the raster is a zero-padded phase split holding
// every window, so gathered pieces read it too and no output is a border one.
void plan_panels(const Window2D& w, const uint8_t* flags, int64_t nr, int64_t vec, int64_t raster_width,
                 bool in_raster, PanelPlan& plan);

}  // namespace deltaonnx
