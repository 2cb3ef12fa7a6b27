// A minimal JSON object writer for benchmark results, one object per line (JSON Lines), so that
// results from many runs can be appended to one file and read back line by line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fusedmoe::bench {

// `s` as a JSON string literal, quotes included; invalid UTF-8 bytes become U+FFFD.
std::string json_quote(std::string_view s);

class JsonObject {
 public:
  // Keys are written in call order; the caller keeps them unique.
  JsonObject& add(std::string_view key, std::string_view value);
  JsonObject& add(std::string_view key, const char* value) {
    return add(key, std::string_view(value));
  }
  JsonObject& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view(value));
  }
  // Shortest text that reads back to the same double; NaN and infinities become null.
  JsonObject& add(std::string_view key, double value);
  JsonObject& add(std::string_view key, std::int64_t value);
  JsonObject& add(std::string_view key, int value) {
    return add(key, static_cast<std::int64_t>(value));
  }
  JsonObject& add(std::string_view key, bool value);
  JsonObject& add_null(std::string_view key);

  // "{...}" on one line.
  std::string str() const { return body_ + "}"; }

 private:
  void key(std::string_view k);
  std::string body_ = "{";
};

// Appends `object` and a newline to `path`, creating it if needed. On failure returns false and
// sets `error` (the path and the reason).
bool append_json_line(const std::string& path, const JsonObject& object, std::string* error);

}  // namespace fusedmoe::bench
