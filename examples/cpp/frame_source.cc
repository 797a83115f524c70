#include "frame_source.h"

#include <fstream>
#include <stdexcept>

#if defined(DELTAONNX_EXAMPLE_HAVE_OPENCV)
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#endif

namespace deltaonnx_example {
namespace {

class RawFrameFile : public FrameSource {
 public:
  RawFrameFile(const std::string& path, size_t frame_elements)
      : path_(path), file_(path, std::ios::binary), frame_bytes_(frame_elements * sizeof(float)) {
    if (!file_) throw std::runtime_error("cannot open frame file " + path);
    file_.seekg(0, std::ios::end);
    const auto size = static_cast<size_t>(file_.tellg());
    file_.seekg(0, std::ios::beg);
    if (frame_bytes_ == 0 || size % frame_bytes_ != 0) {
      throw std::runtime_error(path + " holds " + std::to_string(size) + " bytes, not a whole number of " +
                               std::to_string(frame_bytes_) + "-byte frames (check the input shape)");
    }
  }

  bool next(std::vector<float>& frame) override {
    frame.resize(frame_bytes_ / sizeof(float));
    // Frames are stored little-endian, which every platform deltaonnx targets (x86-64, aarch64) is.
    file_.read(reinterpret_cast<char*>(frame.data()), static_cast<std::streamsize>(frame_bytes_));
    if (file_.gcount() == 0) return false;
    if (static_cast<size_t>(file_.gcount()) != frame_bytes_) throw std::runtime_error("short read from " + path_);
    return true;
  }

 private:
  std::string path_;
  std::ifstream file_;
  size_t frame_bytes_;
};

#if defined(DELTAONNX_EXAMPLE_HAVE_OPENCV)
class OpenCvVideo : public FrameSource {
 public:
  OpenCvVideo(const std::string& source, const std::vector<int64_t>& shape) {
    if (shape.size() != 4 || shape[0] != 1)
      throw std::runtime_error("video input needs a model input of shape [1,C,H,W] or [1,H,W,C]");
    if (shape[1] == 1 || shape[1] == 3) {
      channels_ = shape[1], height_ = shape[2], width_ = shape[3], nhwc_ = false;
    } else if (shape[3] == 1 || shape[3] == 3) {
      height_ = shape[1], width_ = shape[2], channels_ = shape[3], nhwc_ = true;
    } else {
      throw std::runtime_error("video input needs 1 or 3 channels in dim 1 (NCHW) or dim 3 (NHWC)");
    }
    const bool camera = !source.empty() && source.find_first_not_of("0123456789") == std::string::npos;
    if (camera ? !capture_.open(std::stoi(source)) : !capture_.open(source))
      throw std::runtime_error("OpenCV cannot open " + source);
  }

  bool next(std::vector<float>& frame) override {
    cv::Mat bgr;
    if (!capture_.read(bgr) || bgr.empty()) return false;
    cv::Mat converted, resized, scaled;
    if (bgr.depth() != CV_8U) throw std::runtime_error("OpenCV returned a frame that is not 8-bit");
    const int code = bgr.channels() == 1 ? (channels_ == 3 ? cv::COLOR_GRAY2RGB : -1)
                     : bgr.channels() == 4 ? (channels_ == 3 ? cv::COLOR_BGRA2RGB : cv::COLOR_BGRA2GRAY)
                                           : (channels_ == 3 ? cv::COLOR_BGR2RGB : cv::COLOR_BGR2GRAY);
    if (code < 0) converted = bgr;
    else cv::cvtColor(bgr, converted, code);
    if (converted.cols != width_ || converted.rows != height_) {
      cv::resize(converted, resized, cv::Size(static_cast<int>(width_), static_cast<int>(height_)), 0, 0,
                 cv::INTER_AREA);
    } else {
      resized = converted;
    }
    resized.convertTo(scaled, CV_32F, 1.0 / 255.0);  // HWC, interleaved channels
    frame.resize(static_cast<size_t>(channels_ * height_ * width_));
    const int64_t plane = height_ * width_;
    for (int64_t y = 0; y < height_; ++y) {
      const float* row = scaled.ptr<float>(static_cast<int>(y));
      for (int64_t x = 0; x < width_; ++x)
        for (int64_t c = 0; c < channels_; ++c) {
          const float v = row[x * channels_ + c];
          if (nhwc_) frame[static_cast<size_t>((y * width_ + x) * channels_ + c)] = v;
          else frame[static_cast<size_t>(c * plane + y * width_ + x)] = v;
        }
    }
    return true;
  }

 private:
  cv::VideoCapture capture_;
  int64_t channels_ = 0, height_ = 0, width_ = 0;
  bool nhwc_ = false;
};
#endif

}  // namespace

std::unique_ptr<FrameSource> open_raw_frames(const std::string& path, size_t frame_elements) {
  return std::make_unique<RawFrameFile>(path, frame_elements);
}

std::unique_ptr<FrameSource> open_video(const std::string& source, const std::vector<int64_t>& input_shape) {
#if defined(DELTAONNX_EXAMPLE_HAVE_OPENCV)
  return std::make_unique<OpenCvVideo>(source, input_shape);
#else
  (void)source;
  (void)input_shape;
  throw std::runtime_error(
      "this build has no OpenCV: install it (Debian: apt-get install libopencv-videoio-dev libopencv-imgproc-dev) "
      "and re-run cmake, or pass raw float32 frames with --raw");
#endif
}

bool have_opencv() {
#if defined(DELTAONNX_EXAMPLE_HAVE_OPENCV)
  return true;
#else
  return false;
#endif
}

}  // namespace deltaonnx_example
