// The parts of docs/design.md rules 1-3 that DeltaConv and DeltaPool share: deciding whether state exists, and
// for one batch item finding the changed input pixels and moving the reference where they changed.
#pragma once
#include <cstdint>
#include <vector>

#include "common/change_map.h"
#include "common/kernel_table.h"
#include "common/parallel.h"
#include "delta_gate/gate_spec.h"

namespace deltaonnx {

struct RunStats {
  int64_t changed_inputs = 0;
  int64_t recomputed_outputs = 0;
};

struct InputState {
  const float* x = nullptr;       // [C, H, W] of one batch item
  const float* x_ref = nullptr;   // same shape (when has_state and the reference is kept)
  const uint8_t* map_in = nullptr;  // [H, W] or nullptr: compare only marked pixels
  float* x_ref_next = nullptr;    // may equal x_ref (bound in place); nullptr when the reference is dropped
  bool has_state = false;         // rule 1: false on a first frame, after a reset or a resolution change
  // At tau = 0 with a change map the op may keep no reference (docs/design.md#dropped-references): the map's marks are the changed
  // pixels and X itself is what a reference would hold.
  bool reference_dropped = false;
  int64_t channels = 0, height = 0, width = 0;
  float tau = 0.f;
  // The block rule (docs/design.md#rule-2b) with its k and tau_hard, or nullptr: the pixel rule (rule 2) with tau.
  const GateSpec* block_gate = nullptr;
  const KernelTable* kernels = nullptr;  // nullptr: the table in use (kernels())
  // > 1: x, x_ref and x_ref_next hold [C/block][H][W][block] (layout "blocked", docs/ops.md#blocked-layout); the
  // change test reads a pixel's channels as lines (the kernel table's blocked_detect_update).
  int64_t block = 1;
};

// The change rule a node's inner threshold uses: the pixel rule unless its attributes ask for the block rule
// (ConvSpec / PoolSpec hold one; tau is the node's threshold).
inline GateSpec pixel_rule(float tau = 0.f) {
  GateSpec g;
  g.block_rule = false;
  g.block = 1;
  g.tau = g.hard = tau;
  return g;
}
inline const GateSpec* block_rule_of(const GateSpec& g) { return g.block_rule ? &g : nullptr; }

// The tensors of one run over a batch that DeltaConv and DeltaPool share. Pointers are for the whole batch;
// x_ref / y_prev are nullptr when there is no usable state (rule 1), map_in when absent; y may equal y_prev
// and x_ref_next may equal x_ref (bound in place). reference_dropped: no X_ref is kept (tau = 0 with a map;
// x_ref and x_ref_next are nullptr).
struct DeltaRun {
  int64_t batch = 0, channels = 0, height = 0, width = 0;  // of X
  bool has_state = false;
  bool reference_dropped = false;
  const float* x = nullptr;
  const float* x_ref = nullptr;
  const float* y_prev = nullptr;
  const uint8_t* map_in = nullptr;
  float* y = nullptr;
  float* x_ref_next = nullptr;
  uint8_t* map_out = nullptr;
  int64_t block = 1;  // > 1: X, X_ref, Y, Y_prev and X_ref_next are blocked by it (InputState::block)
};

// The input side of batch item n of a run, compared with threshold tau (or by block_gate's rule).
InputState item_input(const DeltaRun& run, int64_t n, float tau, const GateSpec* block_gate, const KernelTable* kernels);

// Rules 1-4 for batch item n, shared by DeltaConv and DeltaPool: the input side (item_input), the change
// test and reference update, the recompute plan written to the item's map_out, the statistics, and the
// previous output carried where nothing is recomputed. The op then computes the flagged outputs.
struct ItemPlan {
  InputState input;
  uint8_t* out_flags = nullptr;  // the item's map_out
  float* y = nullptr;            // the item's output
  int64_t recompute = 0;         // recomputed output pixels
};
// sum_marks: the item's map_z of DeltaConv's sum input ([Ho*Wo], or nullptr), whose marks are recomputed too.
ItemPlan plan_item(const DeltaRun& run, int64_t n, float tau, const GateSpec* block_gate, const KernelTable* kernels, const Window2D& w,
                   float dense_fraction, int64_t out_channels, std::vector<uint8_t>& in_flags,
                   std::vector<uint8_t>& scratch, RunStats* stats, const ParallelFor& parallel_for,
                   const uint8_t* sum_marks = nullptr);

// The changed pixels of one item's input: nonzero bytes of flags[H*W], and how many.
struct ChangedPixels {
  const uint8_t* flags = nullptr;
  int64_t count = 0;
};

// Fills flags[H*W] with 1 where the input changed (rule 2, or rule 2b with a block gate: the gate engine's
// verdict; every pixel without state) and writes x_ref_next (rule 3), in either layout (s.block). Where the
// reference is dropped the map's marks are the changes: the map itself is returned, counted, not copied.
ChangedPixels detect_and_update_reference(const InputState& s, uint8_t* flags, const ParallelFor& parallel_for);

// Rule 1's reference alone (no state: every pixel changed): x_ref_next becomes X, where it is kept and is not X's
// own memory. For a caller that recomputes the item whole and needs no flags.
void take_whole_reference(const InputState& s, const ParallelFor& parallel_for);

// What recomputed outputs are computed from (rule 4): the moved reference, or X when it is dropped.
inline const float* recompute_source(const InputState& s) { return s.reference_dropped ? s.x : s.x_ref_next; }

// Rule 4 and the dense rule for one batch item: out_flags[Ho*Wo] = 1 where the output is recomputed (the
// OR-pool of in_flags, nonzero where the input changed, through the window, with the marks of sum_marks [Ho*Wo] when given: DeltaConv's map_z;
// everything without state, or when more than dense_fraction of the output would be recomputed). Returns the
// number of recomputed output pixels.
int64_t plan_recompute(const uint8_t* in_flags, int64_t changed_inputs, bool has_state, const Window2D& w,
                       float dense_fraction, uint8_t* out_flags, std::vector<uint8_t>& scratch,
                       const uint8_t* sum_marks = nullptr);

// Carries the previous output where nothing is recomputed, unless y and y_prev share their buffer (bound in
// place), when there is nothing to do. y, y_prev: [channels, plane] of one batch item.
void carry_previous_output(const float* y_prev, float* y, int64_t channels, int64_t plane, int64_t recomputed,
                           const ParallelFor& parallel_for);

}  // namespace deltaonnx
