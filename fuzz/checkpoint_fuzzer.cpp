// libFuzzer harness: everything that reads a checkpoint's bytes before a tensor is loaded — the
// safetensors header (length prefix and JSON), a sharded index, config.json and the JSON parser
// under them. The input is one file's bytes. Properties besides "no crash": an accepted header's
// tensors lie inside the file, hold exactly numel x dtype-size bytes and do not overlap; every
// refusal carries a message.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "core/json.hpp"
#include "core/safetensors.hpp"
#include "fusedmoe/checkpoint.hpp"

namespace {

void require(bool ok) {
  if (!ok) __builtin_trap();
}

template <class R>
void require_message_if_failed(const R& r) {
  if (!r.ok()) require(!r.status().message().empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fusedmoe;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // As a .safetensors file of exactly these bytes.
  if (size >= 8) {
    const Result<std::uint64_t> n = core::safetensors_header_length(bytes.first(8), size);
    require_message_if_failed(n);
    if (n.ok()) require(8 + n.value() <= size);
  }
  const Result<core::SafetensorsHeader> h = core::parse_safetensors_header(bytes, size);
  require_message_if_failed(h);
  if (h.ok()) {
    const std::uint64_t data_bytes = size - h->data_start;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (const core::SafetensorsEntry& t : h->tensors) {
      require(t.begin <= t.end && t.end <= data_bytes);
      std::uint64_t numel = 1;
      for (std::int64_t d : t.shape) {
        require(d >= 0);
        numel *= static_cast<std::uint64_t>(d);
      }
      require(t.end - t.begin == numel * core::safetensors_dtype_size(t.dtype));
      if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      require(ranges[i - 1].second <= ranges[i].first);
  }

  // As JSON: the parser itself, a sharded index and a config.json.
  require_message_if_failed(core::parse_json(text));
  const auto index = core::parse_safetensors_index(text);
  require_message_if_failed(index);
  if (index.ok()) {
    for (const auto& [name, shard] : index.value()) {
      require(shard.find('/') == std::string::npos);  // an index never points outside its folder
    }
  }
  const Result<ModelConfig> model = parse_model_config(text);
  require_message_if_failed(model);
  if (model.ok()) static_cast<void>(validate(model->layer));  // may refuse; must not crash
  return 0;
}
