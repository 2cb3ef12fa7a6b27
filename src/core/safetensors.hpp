// The safetensors format, as pure functions over bytes (no files here, so they can be fuzzed):
//
//   [8 bytes: N, little-endian u64][N bytes: JSON header][data]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} with the
// offsets relative to the start of the data; an optional "__metadata__" maps strings to strings.
// Sharded checkpoints add model.safetensors.index.json: {"weight_map": {tensor name: shard}}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe::core {

// Headers larger than this are refused before anything is allocated (the reference
// implementation has the same limit).
inline constexpr std::uint64_t kMaxSafetensorsHeader = std::uint64_t{100} << 20;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // as written: "BF16", "F32", "F8_E4M3", ...
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets into the data section
  std::uint64_t end = 0;
};

struct SafetensorsHeader {
  std::uint64_t data_start = 0;           // 8 + N: where the data section begins in the file
  std::vector<SafetensorsEntry> tensors;  // in the header's order
  std::vector<std::pair<std::string, std::string>> metadata;
};

// The safetensors dtype name of a fusedmoe dtype ("BF16", "F16", "F32", "I32").
std::string_view safetensors_name(DType dtype);

// Bytes per element of a safetensors dtype name; 0 for a name the format does not define.
std::size_t safetensors_dtype_size(std::string_view dtype);

// The header length N from the first 8 bytes of a file of `file_size` bytes, checked against the
// file and kMaxSafetensorsHeader.
Result<std::uint64_t> safetensors_header_length(std::span<const std::byte> first8,
                                                std::uint64_t file_size);

// Parses and checks the header of a file of `file_size` bytes from its first bytes `head`
// (at least 8 + N of them; more are ignored). Every tensor's dtype must be known, its shape
// non-negative, its byte range [begin, end) inside the data section and of exactly
// numel * dtype size bytes, and no two ranges may overlap. Problems are io_error.
Result<SafetensorsHeader> parse_safetensors_header(std::span<const std::byte> head,
                                                   std::uint64_t file_size);

// The weight_map of a model.safetensors.index.json: (tensor name, shard file name) pairs. Shard
// names must be plain file names (no directories), so an index cannot point outside its folder.
Result<std::vector<std::pair<std::string, std::string>>> parse_safetensors_index(
    std::string_view json);

}  // namespace fusedmoe::core
