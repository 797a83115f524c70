#include "cuda_common/delta_pipeline.h"

#include "cuda_common/pipeline_kernels.h"

namespace deltaonnx {
namespace cuda {
namespace {

size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

size_t pipeline_scratch_bytes(const DeltaTensors& t) {
  if (!t.has_state) return 0;
  const size_t plane = static_cast<size_t>(t.y_axis.in * t.x_axis.in);
  const size_t out_plane = static_cast<size_t>(t.y_axis.out * t.x_axis.out);
  const size_t n = static_cast<size_t>(t.batch);
  return aligned(n * plane) + aligned(n * sizeof(int32_t)) + aligned(n * out_plane * sizeof(int32_t));
}

PixelList enqueue_delta_pipeline(const DeltaTensors& t, void* scratch, cudaStream_t stream, cudaError_t* error,
                                 const char** failed_step) {
  const int64_t plane = t.y_axis.in * t.x_axis.in;
  const int64_t out_plane = t.y_axis.out * t.x_axis.out;
  PixelList list;
  list.total = out_plane;
  list.dense_fraction = t.dense_fraction;
  *error = cudaSuccess;
  auto step = [&](cudaError_t e, const char* name) {
    if (*error == cudaSuccess && e != cudaSuccess) {
      *error = e;
      *failed_step = name;
    }
    return *error == cudaSuccess;
  };

  if (!t.has_state) {  // rule 1: everything changed, every item dense
    const size_t bytes = static_cast<size_t>(t.batch * t.channels * plane) * sizeof(float);
    if (bytes > 0 && t.x_ref_next != nullptr && !step(cudaMemcpyAsync(t.x_ref_next, t.x, bytes, cudaMemcpyDeviceToDevice, stream), "X_ref_next copy")) {
      return list;
    }
    const size_t map_bytes = static_cast<size_t>(t.batch * out_plane);
    if (map_bytes > 0) step(cudaMemsetAsync(t.map_out, 1, map_bytes, stream), "map_out fill");
    return list;  // pixels == nullptr: dense
  }

  char* base = static_cast<char*>(scratch);
  uint8_t* changed = reinterpret_cast<uint8_t*>(base);
  base += aligned(static_cast<size_t>(t.batch * plane));
  int32_t* counts = reinterpret_cast<int32_t*>(base);
  base += aligned(static_cast<size_t>(t.batch) * sizeof(int32_t));
  int32_t* pixels = reinterpret_cast<int32_t*>(base);

  ChangeStep change;
  change.x = t.x;
  change.x_ref = t.reference_dropped ? nullptr : t.x_ref;
  change.x_ref_next = t.reference_dropped ? nullptr : t.x_ref_next;
  change.map_in = t.map_in;
  change.changed = changed;
  change.batch = t.batch;
  change.channels = t.channels;
  change.plane = plane;
  change.tau = t.tau;
  if (change.threads() > 0 && !step(launch_change_step(change, stream), "change step")) return list;
  if (t.batch * out_plane == 0) return list;

  if (!step(cudaMemsetAsync(counts, 0, static_cast<size_t>(t.batch) * sizeof(int32_t), stream), "count reset")) return list;
  RecomputeStep recompute;
  recompute.changed = changed;
  recompute.map_out = t.map_out;
  recompute.counts = counts;
  recompute.pixel_list = pixels;
  recompute.sum_marks = t.map_z;
  recompute.batch = t.batch;
  recompute.y = t.y_axis;
  recompute.x = t.x_axis;
  if (!step(launch_recompute_step(recompute, stream), "recompute step")) return list;

  list.pixels = pixels;
  list.counts = counts;
  if (!step(launch_densify_step(list, t.map_out, t.batch, stream), "densify step")) return list;

  if (t.y != t.y_prev) {  // bound in place, Y already holds Y_prev where nothing is recomputed
    KeepStep keep;
    keep.y_prev = t.y_prev;
    keep.y = t.y;
    keep.map_out = t.map_out;
    keep.batch = t.batch;
    keep.channels = t.out_channels;
    keep.plane = out_plane;
    if (keep.threads() > 0) step(launch_keep_step(keep, stream), "keep step");
  }
  return list;
}

}  // namespace cuda
}  // namespace deltaonnx
