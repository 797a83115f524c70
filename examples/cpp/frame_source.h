// Where frames come from: raw float32 tensors in a file (always available), or a video file, an image
// sequence or a camera through OpenCV (when the example was built with it).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace deltaonnx_example {

class FrameSource {
 public:
  virtual ~FrameSource() = default;
  // Writes the next frame, already laid out as the model input tensor, into `frame` (its size is the tensor's
  // element count). Returns false when the source has no more frames.
  virtual bool next(std::vector<float>& frame) = 0;
};

// A file of frames stored back to back, each the input tensor's float32 values in its own layout
// (little-endian, e.g. numpy's `frames.astype("<f4").tofile(path)`). A trailing partial frame is an error.
std::unique_ptr<FrameSource> open_raw_frames(const std::string& path, size_t frame_elements);

// With OpenCV: `source` is a video file, an image sequence pattern (frames/%04d.png) or a camera index ("0").
// Each frame is converted to RGB (3 channels) or grey (1 channel), resized to the input's H x W, scaled to [0, 1]
// and laid out as the input: [1,C,H,W] (NCHW) or [1,H,W,C] (NHWC, when dim 1 is not 1 or 3 but dim 3 is).
// Without OpenCV it throws, saying how to enable it. Models with other preprocessing need their own version.
std::unique_ptr<FrameSource> open_video(const std::string& source, const std::vector<int64_t>& input_shape);

// Whether open_video works in this build.
bool have_opencv();

}  // namespace deltaonnx_example
