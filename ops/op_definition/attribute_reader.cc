#include "op_definition/attribute_reader.h"

namespace deltaonnx {
namespace {

// True when the ORT call succeeded; a failure (absent, or another type) is released, not thrown.
bool succeeded(OrtStatus* status) {
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

}  // namespace

AttributeReader::AttributeReader(const OrtKernelInfo* info) : info_(info), node_(node_name_of(info)) {}

bool AttributeReader::has_input(size_t index) const {
  Ort::ConstKernelInfo info(info_);
  return index < info.GetInputCount() && !info.GetInputName(index).empty();
}

bool AttributeReader::has(const char* name) const {
  // Each typed getter fails for an absent attribute and for another type; a present one answers one of them.
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  int64_t i = 0;
  float f = 0.f;
  return succeeded(api.KernelInfoGetAttribute_int64(info_, name, &i)) ||
         succeeded(api.KernelInfoGetAttribute_float(info_, name, &f)) ||
         succeeded(api.KernelInfoGetAttribute_string(info_, name, nullptr, &size)) ||
         succeeded(api.KernelInfoGetAttributeArray_int64(info_, name, nullptr, &size)) ||
         succeeded(api.KernelInfoGetAttributeArray_float(info_, name, nullptr, &size));
}

void AttributeReader::wrong_type(const char* name, const char* expected) const {
  fail(std::string("attribute '") + name + "' must be " + expected + " (it is present with another type)");
}

int64_t AttributeReader::get_int(const char* name, int64_t fallback) const {
  int64_t value = 0;
  if (succeeded(Ort::GetApi().KernelInfoGetAttribute_int64(info_, name, &value))) return value;
  if (has(name)) wrong_type(name, "an int");
  return fallback;
}

float AttributeReader::get_float(const char* name, float fallback) const {
  float value = 0.f;
  if (succeeded(Ort::GetApi().KernelInfoGetAttribute_float(info_, name, &value))) return value;
  if (has(name)) wrong_type(name, "a float");
  return fallback;
}

std::string AttributeReader::get_string(const char* name, const std::string& fallback) const {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfoGetAttribute_string(info_, name, nullptr, &size))) {
    if (has(name)) wrong_type(name, "a string");
    return fallback;
  }
  std::string value(size, '\0');
  Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttribute_string(info_, name, &value[0], &size));
  value.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  return value;
}

// ORT's list getters do not check the attribute's type: a list of another type (or a scalar) reads as an
// empty list. A list that comes back empty is therefore checked against every other type.
bool AttributeReader::empty_list_is_another_type(const char* name, bool ints) const {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  int64_t i = 0;
  float f = 0.f;
  if (succeeded(api.KernelInfoGetAttribute_int64(info_, name, &i)) ||
      succeeded(api.KernelInfoGetAttribute_float(info_, name, &f)) ||
      succeeded(api.KernelInfoGetAttribute_string(info_, name, nullptr, &size)))
    return true;
  size = 0;
  if (ints) return succeeded(api.KernelInfoGetAttributeArray_float(info_, name, nullptr, &size)) && size > 0;
  return succeeded(api.KernelInfoGetAttributeArray_int64(info_, name, nullptr, &size)) && size > 0;
}

std::vector<int64_t> AttributeReader::get_ints(const char* name, const std::vector<int64_t>& fallback) const {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfoGetAttributeArray_int64(info_, name, nullptr, &size))) {
    if (has(name)) wrong_type(name, "a list of ints");
    return fallback;
  }
  if (size == 0 && empty_list_is_another_type(name, true)) wrong_type(name, "a list of ints");
  std::vector<int64_t> value(size);
  if (size > 0) Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttributeArray_int64(info_, name, value.data(), &size));
  return value;
}

std::vector<float> AttributeReader::get_floats(const char* name, const std::vector<float>& fallback) const {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfoGetAttributeArray_float(info_, name, nullptr, &size))) {
    if (has(name)) wrong_type(name, "a list of floats");
    return fallback;
  }
  if (size == 0 && empty_list_is_another_type(name, false)) wrong_type(name, "a list of floats");
  std::vector<float> value(size);
  if (size > 0) Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttributeArray_float(info_, name, value.data(), &size));
  return value;
}

std::string node_name_of(const OrtKernelInfo* info) {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfo_GetNodeName(info, nullptr, &size)) || size == 0) return "";
  std::string name(size, '\0');
  if (!succeeded(Ort::GetApi().KernelInfo_GetNodeName(info, &name[0], &size))) return "";
  name.resize(size - 1);
  return name;
}

}  // namespace deltaonnx
