#include "core/safetensors.hpp"

#include <algorithm>
#include <array>
#include <set>

#include "core/json.hpp"

namespace fusedmoe::core {
namespace {

struct DTypeSize {
  std::string_view name;
  std::size_t bytes;
};

// The dtypes of the safetensors format that have whole-byte elements.
constexpr std::array kDTypes = {
    DTypeSize{"BOOL", 1},    DTypeSize{"U8", 1},      DTypeSize{"I8", 1},  DTypeSize{"F8_E5M2", 1},
    DTypeSize{"F8_E4M3", 1}, DTypeSize{"F8_E8M0", 1}, DTypeSize{"I16", 2}, DTypeSize{"U16", 2},
    DTypeSize{"F16", 2},     DTypeSize{"BF16", 2},    DTypeSize{"I32", 4}, DTypeSize{"U32", 4},
    DTypeSize{"F32", 4},     DTypeSize{"F64", 8},     DTypeSize{"I64", 8}, DTypeSize{"U64", 8},
    DTypeSize{"C64", 8},
};

Status header_error(std::string message) {
  return {StatusCode::io_error, "safetensors header: " + std::move(message)};
}

// A JSON number that is an integer in [0, 2^63).
bool non_negative_integer(const JsonValue& v, std::int64_t* out) {
  if (!v.is_number() || !v.is_integer || v.integer < 0) return false;
  *out = v.integer;
  return true;
}

Result<SafetensorsEntry> parse_entry(const std::string& name, const JsonValue& v,
                                     std::uint64_t data_bytes) {
  const std::string what = "tensor " + quoted(name);
  if (!v.is_object()) return header_error(what + " is not an object");
  const JsonValue* dtype = v.find("dtype");
  const JsonValue* shape = v.find("shape");
  const JsonValue* offsets = v.find("data_offsets");
  if (dtype == nullptr || shape == nullptr || offsets == nullptr) {
    return header_error(what + " needs dtype, shape and data_offsets");
  }
  if (!dtype->is_string()) return header_error(what + ": dtype is not a string");
  const std::size_t elem = safetensors_dtype_size(dtype->string);
  if (elem == 0) return header_error(what + ": unknown dtype " + quoted(dtype->string));
  if (!shape->is_array()) return header_error(what + ": shape is not an array");
  if (!offsets->is_array() || offsets->array.size() != 2) {
    return header_error(what + ": data_offsets must be [begin, end]");
  }
  SafetensorsEntry e;
  e.name = name;
  e.dtype = dtype->string;
  // numel * elem without overflow: a product past the data section is only "too big" (a zero
  // dimension later still makes it 0).
  std::uint64_t bytes = elem;
  bool too_big = false, empty = false;
  for (const JsonValue& d : shape->array) {
    std::int64_t size = 0;
    if (!non_negative_integer(d, &size)) {
      return header_error(what + ": shape entries must be non-negative integers");
    }
    e.shape.push_back(size);
    const auto s = static_cast<std::uint64_t>(size);
    if (s == 0) {
      empty = true;
    } else if (bytes > data_bytes / s) {
      too_big = true;
    } else {
      bytes *= s;
    }
  }
  if (empty) bytes = 0;
  too_big = too_big && !empty;
  std::int64_t begin = 0, end = 0;
  if (!non_negative_integer(offsets->array[0], &begin) ||
      !non_negative_integer(offsets->array[1], &end)) {
    return header_error(what + ": data_offsets must be non-negative integers");
  }
  e.begin = static_cast<std::uint64_t>(begin);
  e.end = static_cast<std::uint64_t>(end);
  const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ")";
  if (e.end < e.begin) return header_error(what + ": data_offsets " + range + " end before begin");
  if (e.end > data_bytes) {
    return header_error(what + ": data_offsets " + range + " run past the data section (" +
                        std::to_string(data_bytes) + " bytes; file truncated?)");
  }
  if (too_big || bytes != e.end - e.begin) {
    return header_error(
        what + ": data_offsets " + range + " hold " + std::to_string(e.end - e.begin) +
        " bytes, but dtype " + e.dtype + " x shape needs " +
        (too_big ? std::string("more than the file holds") : std::to_string(bytes)));
  }
  return e;
}

}  // namespace

std::size_t safetensors_dtype_size(std::string_view dtype) {
  for (const DTypeSize& d : kDTypes) {
    if (d.name == dtype) return d.bytes;
  }
  return 0;
}

Result<std::uint64_t> safetensors_header_length(std::span<const std::byte> first8,
                                                std::uint64_t file_size) {
  if (first8.size() < 8 || file_size < 8) {
    return header_error("the file is " + std::to_string(file_size) +
                        " bytes, shorter than the 8-byte header length");
  }
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(first8[i]);
  if (n > kMaxSafetensorsHeader) {
    return header_error("header length " + std::to_string(n) + " exceeds the limit of " +
                        std::to_string(kMaxSafetensorsHeader) + " bytes (not a safetensors file?)");
  }
  if (n > file_size - 8) {
    return header_error("header length " + std::to_string(n) + " runs past the end of the " +
                        std::to_string(file_size) + "-byte file (truncated?)");
  }
  return n;
}

Result<SafetensorsHeader> parse_safetensors_header(std::span<const std::byte> head,
                                                   std::uint64_t file_size) {
  Result<std::uint64_t> n = safetensors_header_length(head, file_size);
  if (!n.ok()) return n.status();
  if (head.size() - 8 < n.value()) {
    return header_error("only " + std::to_string(head.size()) + " of its " +
                        std::to_string(8 + n.value()) + " bytes were given");
  }
  const std::string_view text(reinterpret_cast<const char*>(head.data()) + 8,
                              static_cast<std::size_t>(n.value()));
  Result<JsonValue> json = parse_json(text);
  if (!json.ok()) return header_error(json.status().message());
  if (!json->is_object()) return header_error("not a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n.value();
  const std::uint64_t data_bytes = file_size - h.data_start;
  std::set<std::string_view> seen;
  for (const auto& [name, value] : json->object) {
    if (!seen.insert(name).second) return header_error("tensor " + quoted(name) + " twice");
    if (name == "__metadata__") {
      if (!value.is_object()) return header_error("__metadata__ is not an object");
      for (const auto& [key, item] : value.object) {
        if (!item.is_string()) {
          return header_error("__metadata__ value " + quoted(key) + " is not a string");
        }
        h.metadata.emplace_back(key, item.string);
      }
      continue;
    }
    Result<SafetensorsEntry> e = parse_entry(name, value, data_bytes);
    if (!e.ok()) return e.status();
    h.tensors.push_back(std::move(e).value());
  }

  // Overlaps: sorted by begin, each range must start at or after the end of the one before
  // (empty tensors take no bytes and may sit anywhere).
  std::vector<const SafetensorsEntry*> by_offset;
  for (const SafetensorsEntry& e : h.tensors) {
    if (e.end > e.begin) by_offset.push_back(&e);
  }
  std::sort(
      by_offset.begin(), by_offset.end(),
      [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return header_error("tensors " + quoted(by_offset[i - 1]->name) + " and " +
                          quoted(by_offset[i]->name) + " overlap in the data section");
    }
  }
  return h;
}

Result<std::vector<std::pair<std::string, std::string>>> parse_safetensors_index(
    std::string_view json_text) {
  const auto error = [](std::string message) {
    return Status{StatusCode::io_error, "safetensors index: " + std::move(message)};
  };
  Result<JsonValue> json = parse_json(json_text);
  if (!json.ok()) return error(json.status().message());
  const JsonValue* map = json->find("weight_map");
  if (map == nullptr || !map->is_object()) return error("no \"weight_map\" object");
  std::vector<std::pair<std::string, std::string>> entries;
  std::set<std::string_view> seen;
  for (const auto& [name, shard] : map->object) {
    if (!seen.insert(name).second) return error("tensor " + quoted(name) + " twice");
    if (!shard.is_string()) return error("the shard of " + quoted(name) + " is not a string");
    const std::string& file = shard.string;
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
        file.find('\\') != std::string::npos || file.find('\0') != std::string::npos) {
      return error("shard " + quoted(file) + " of " + quoted(name) +
                   " is not a plain file name in the checkpoint's folder");
    }
    entries.emplace_back(name, file);
  }
  return entries;
}

std::string_view safetensors_name(DType dtype) {
  switch (dtype) {
    case DType::bf16:
      return "BF16";
    case DType::f16:
      return "F16";
    case DType::f32:
      return "F32";
    case DType::i32:
      return "I32";
  }
  return "?";
}

}  // namespace fusedmoe::core
