// A small JSON reader, enough for the `deltaonnx` metadata entry of a converted model (docs/state_protocol.md).
// It parses all of JSON (RFC 8259: objects, arrays, strings with every escape, numbers, true/false/null) into a
// tree; it does not write JSON. An application that already uses a JSON library (nlohmann/json is Debian's
// nlohmann-json3-dev) can read the same few fields with it instead.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace deltaonnx_example {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  // Parses a whole document; throws std::runtime_error naming the byte offset of the first error.
  static JsonValue parse(const std::string& text);

  Type type() const { return type_; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_number() const { return type_ == Type::kNumber; }

  // Typed access; throws std::runtime_error when the value has another type.
  const std::string& as_string() const;
  double as_number() const;
  const std::vector<JsonValue>& as_array() const;

  // Object member access: `find` returns nullptr when absent, `at` throws naming the key.
  const JsonValue* find(const std::string& key) const;
  const JsonValue& at(const std::string& key) const;

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  bool boolean_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<JsonValue> array_;
  std::map<std::string, JsonValue> object_;
};

}  // namespace deltaonnx_example
