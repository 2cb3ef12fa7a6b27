// A small JSON reader for the files a checkpoint comes with: safetensors headers, the shard
// index and config.json. It reads all of RFC 8259 (objects, arrays, strings with escapes,
// numbers, true/false/null) and nothing more. Untrusted input is the normal case, so parse_json
// is a pure function that returns a Status for anything malformed and bounds its own work:
// nesting depth is limited (the recursion and the value's destructor are bounded by it) and so
// is the input size the callers pass.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fusedmoe/status.hpp"

namespace fusedmoe::core {

// Deeper nesting is refused; no file fusedmoe reads needs more than a few levels.
inline constexpr int kMaxJsonDepth = 64;

struct JsonMember;

struct JsonValue {
  enum class Kind : std::uint8_t { null, boolean, number, string, array, object };

  Kind kind = Kind::null;
  bool boolean = false;
  double number = 0;
  // Numbers written as integers that fit std::int64_t (offsets, sizes) are exact here; a double
  // would lose offsets above 2^53.
  bool is_integer = false;
  std::int64_t integer = 0;
  std::string string;
  std::vector<JsonValue> array;
  // in file order; duplicates kept. (Not a std::pair: a pair needs JsonValue complete here, which
  // clang with libstdc++ enforces; std::vector of an incomplete type is fine.)
  std::vector<JsonMember> object;

  bool is_null() const { return kind == Kind::null; }
  bool is_bool() const { return kind == Kind::boolean; }
  bool is_number() const { return kind == Kind::number; }
  bool is_string() const { return kind == Kind::string; }
  bool is_array() const { return kind == Kind::array; }
  bool is_object() const { return kind == Kind::object; }
  // The first member named `key` of an object; nullptr when absent or not an object.
  const JsonValue* find(std::string_view key) const;
};

struct JsonMember {
  std::string key;
  JsonValue value;
};

// 's' in single quotes, for messages that name a key, a tensor or a file.
std::string quoted(std::string_view s);

// "object", "number", ...: for messages.
std::string_view to_string(JsonValue::Kind kind);

// The value `text` holds (surrounding white space allowed, nothing else after it), or io_error
// naming the byte offset and what was expected there.
Result<JsonValue> parse_json(std::string_view text);

}  // namespace fusedmoe::core
