#include "core/json.hpp"

#include <charconv>
#include <cmath>
#include <system_error>

namespace fusedmoe::core {

const JsonValue* JsonValue::find(std::string_view key) const {
  if (kind != Kind::object) return nullptr;
  for (const auto& [name, value] : object) {
    if (name == key) return &value;
  }
  return nullptr;
}

std::string_view to_string(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Kind::null:
      return "null";
    case JsonValue::Kind::boolean:
      return "boolean";
    case JsonValue::Kind::number:
      return "number";
    case JsonValue::Kind::string:
      return "string";
    case JsonValue::Kind::array:
      return "array";
    case JsonValue::Kind::object:
      return "object";
  }
  return "?";
}

namespace {

class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  Result<JsonValue> parse_document() {
    JsonValue v;
    skip_space();
    if (!parse_value(v, 0)) return error_status();
    skip_space();
    if (pos_ != text_.size()) {
      fail("unexpected text after the JSON value");
      return error_status();
    }
    return v;
  }

 private:
  // Every parse_* returns false after fail() has recorded the first error.
  bool fail(std::string_view what) {
    if (error_.empty()) {
      error_ = std::string(what);
      error_pos_ = pos_;
    }
    return false;
  }

  Status error_status() const {
    return {StatusCode::io_error,
            "malformed JSON at byte " + std::to_string(error_pos_) + ": " + error_};
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
      ++pos_;
    }
  }

  bool expect(char c) {
    skip_space();
    if (at_end() || peek() != c) return fail(std::string("expected '") + c + "'");
    ++pos_;
    return true;
  }

  bool literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return fail("expected a JSON value");
    pos_ += word.size();
    return true;
  }

  bool parse_value(JsonValue& v, int depth) {
    skip_space();
    if (at_end()) return fail("unexpected end of input, expected a value");
    switch (peek()) {
      case '{':
        return parse_object(v, depth + 1);
      case '[':
        return parse_array(v, depth + 1);
      case '"':
        v.kind = JsonValue::Kind::string;
        return parse_string(v.string);
      case 't':
        v.kind = JsonValue::Kind::boolean;
        v.boolean = true;
        return literal("true");
      case 'f':
        v.kind = JsonValue::Kind::boolean;
        v.boolean = false;
        return literal("false");
      case 'n':
        v.kind = JsonValue::Kind::null;
        return literal("null");
      default:
        return parse_number(v);
    }
  }

  bool parse_object(JsonValue& v, int depth) {
    if (depth > kMaxJsonDepth) return fail("nesting deeper than the limit");
    v.kind = JsonValue::Kind::object;
    ++pos_;  // '{'
    skip_space();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return true;
    }
    for (;;) {
      skip_space();
      if (at_end() || peek() != '"') return fail("expected a string key");
      std::string key;
      if (!parse_string(key)) return false;
      if (!expect(':')) return false;
      JsonValue member;
      if (!parse_value(member, depth)) return false;
      v.object.push_back({std::move(key), std::move(member)});
      skip_space();
      if (at_end()) return fail("unexpected end of input in an object");
      if (peek() == '}') {
        ++pos_;
        return true;
      }
      if (peek() != ',') return fail("expected ',' or '}'");
      ++pos_;
    }
  }

  bool parse_array(JsonValue& v, int depth) {
    if (depth > kMaxJsonDepth) return fail("nesting deeper than the limit");
    v.kind = JsonValue::Kind::array;
    ++pos_;  // '['
    skip_space();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return true;
    }
    for (;;) {
      JsonValue element;
      if (!parse_value(element, depth)) return false;
      v.array.push_back(std::move(element));
      skip_space();
      if (at_end()) return fail("unexpected end of input in an array");
      if (peek() == ']') {
        ++pos_;
        return true;
      }
      if (peek() != ',') return fail("expected ',' or ']'");
      ++pos_;
    }
  }

  // Four hex digits at pos_.
  bool parse_hex4(std::uint32_t& out) {
    if (text_.size() - pos_ < 4) return fail("truncated \\u escape");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      std::uint32_t d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return fail("bad hex digit in a \\u escape");
      }
      out = out * 16 + d;
    }
    return true;
  }

  static void append_utf8(std::string& s, std::uint32_t cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xf0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  bool parse_escape(std::string& out) {
    if (at_end()) return fail("unterminated string");
    const char c = text_[pos_++];
    switch (c) {
      case '"':
      case '\\':
      case '/':
        out += c;
        return true;
      case 'b':
        out += '\b';
        return true;
      case 'f':
        out += '\f';
        return true;
      case 'n':
        out += '\n';
        return true;
      case 'r':
        out += '\r';
        return true;
      case 't':
        out += '\t';
        return true;
      case 'u': {
        std::uint32_t cp = 0;
        if (!parse_hex4(cp)) return false;
        if (cp >= 0xdc00 && cp <= 0xdfff) return fail("lone low surrogate in a \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
          // A high surrogate must be followed by its low half.
          if (text_.substr(pos_, 2) != "\\u") return fail("unpaired surrogate in a \\u escape");
          pos_ += 2;
          std::uint32_t low = 0;
          if (!parse_hex4(low)) return false;
          if (low < 0xdc00 || low > 0xdfff) return fail("unpaired surrogate in a \\u escape");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        append_utf8(out, cp);
        return true;
      }
      default:
        --pos_;
        return fail("bad escape in a string");
    }
  }

  bool parse_string(std::string& out) {
    ++pos_;  // '"'
    for (;;) {
      if (at_end()) return fail("unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      ++pos_;
      if (c == '\\') {
        if (!parse_escape(out)) return false;
      } else {
        out += c;
      }
    }
  }

  bool digits() {
    const std::size_t start = pos_;
    while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    return pos_ > start;
  }

  // RFC 8259's grammar, checked here: from_chars alone would accept "+1", "01" or "1.".
  bool parse_number(JsonValue& v) {
    const std::size_t start = pos_;
    if (!at_end() && peek() == '-') ++pos_;
    if (at_end() || peek() < '0' || peek() > '9') return fail("expected a JSON value");
    if (peek() == '0') {
      ++pos_;
    } else {
      digits();
    }
    bool integral = true;
    if (!at_end() && peek() == '.') {
      ++pos_;
      integral = false;
      if (!digits()) return fail("expected digits after '.'");
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      integral = false;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!digits()) return fail("expected digits in the exponent");
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    v.kind = JsonValue::Kind::number;
    if (integral) {
      std::int64_t i = 0;
      const auto [end, ec] = std::from_chars(first, last, i);
      if (ec == std::errc() && end == last) {
        v.is_integer = true;
        v.integer = i;
      }
    }
    double d = 0;
    const auto [end, ec] = std::from_chars(first, last, d);
    if (ec == std::errc::result_out_of_range) {
      // Beyond a double: 1e999 becomes infinity and 1e-999 zero, as most readers give.
      const std::string_view written(first, static_cast<std::size_t>(last - first));
      const bool tiny = written.find("e-") != std::string_view::npos ||
                        written.find("E-") != std::string_view::npos;
      d = (*first == '-' ? -1.0 : 1.0) * (tiny ? 0.0 : HUGE_VAL);
    } else if (ec != std::errc() || end != last) {
      return fail("bad number");
    }
    v.number = d;
    return true;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  std::string error_;
  std::size_t error_pos_ = 0;
};

}  // namespace

Result<JsonValue> parse_json(std::string_view text) { return JsonParser(text).parse_document(); }

std::string quoted(std::string_view s) {
  // Appended piece by piece: "'" + std::string(s) + "'" trips a GCC 12 -Wrestrict false positive.
  std::string q;
  q.reserve(s.size() + 2);
  q += '\'';
  q.append(s);
  q += '\'';
  return q;
}

}  // namespace fusedmoe::core
