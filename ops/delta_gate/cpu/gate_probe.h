// The gate's answer without a run, for ORT clients that skip a frame the gate would not pass (the C ABI of the
// CPU op library, beside RegisterCustomOps; docs/state_protocol.md, "Skipping a frame that changes nothing").
// DeltaSession asks the same entry point through deltaonnx._native.gate_finds_change.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" {

// Whether a DeltaGate with these attributes (rule "pixel" or "block", threshold, gate_block, gate_hard: as
// the node's, docs/ops.md) would mark any pixel of frame `x` against its reference `x_ref` (both float32 NCHW
// of `shape`, the gate's X and X_ref), looking only where the optional external map marks (`map_in` of
// `map_shape` [N,1,H,W] or one cell per block; nullptr or an empty shape: no map). Nothing is written.
// Returns 1 (some pixel changed: run the model), 0 (none: the run may be skipped), or -1 when the arguments
// are invalid, with the reason in `error` (NUL-terminated, cut to `error_size`; may be nullptr).
int deltaonnx_gate_finds_change(const char* rule, float threshold, int64_t gate_block, float gate_hard,
                                const int64_t* shape, const float* x, const float* x_ref, const uint8_t* map_in,
                                const int64_t* map_shape, char* error, size_t error_size);

}  // extern "C"
