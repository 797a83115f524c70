// How every Delta op, on every execution provider, reports failure to ORT: exceptions never cross the C
// boundary; each becomes an OrtStatus whose message starts with "<op> node '<name>': ". Input a user can fix
// (attributes, shapes, state) is ORT_INVALID_ARGUMENT; a device failure is ORT_RUNTIME_EXCEPTION.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <new>
#include <stdexcept>
#include <string>

#include "common/checked_size.h"

namespace deltaonnx {

// Input the user can fix. The message says what is wrong, without the op and node (op_status adds them).
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A failure of the device or its runtime (a CUDA error), not of the input.
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs body, turning any exception into an OrtStatus (nullptr on success).
template <class Body>
OrtStatusPtr op_status(const char* op, const std::string& node, Body&& body) noexcept {
  const auto status = [&](OrtErrorCode code, const char* what) {
    return Ort::GetApi().CreateStatus(code, (std::string(op) + " node '" + node + "': " + what).c_str());
  };
  try {
    body();
    return nullptr;
  } catch (const UserError& e) {
    return status(ORT_INVALID_ARGUMENT, e.what());
  } catch (const SizeOverflow& e) {
    return status(ORT_INVALID_ARGUMENT, e.what());
  } catch (const DeviceError& e) {
    return status(ORT_RUNTIME_EXCEPTION, e.what());
  } catch (const Ort::Exception& e) {
    return status(e.GetOrtErrorCode(), e.what());
  } catch (const std::bad_alloc&) {
    return status(ORT_FAIL, "out of memory");
  } catch (const std::exception& e) {
    return status(ORT_FAIL, e.what());
  } catch (...) {
    return status(ORT_FAIL, "unknown error");
  }
}

}  // namespace deltaonnx
