// Turns exceptions into an OrtStatus so none crosses ORT's C boundary; the message names the op.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <exception>
#include <string>

namespace ort_invoke {

template <typename F>
OrtStatusPtr guarded(const char* op, F&& f) noexcept {
  try {
    f();
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), (std::string(op) + ": " + e.what()).c_str());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, (std::string(op) + ": " + e.what()).c_str());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, (std::string(op) + ": unknown exception").c_str());
  }
}

}  // namespace ort_invoke
