#include "routing_check.hpp"

#include <algorithm>
#include <cmath>

namespace fusedmoe::cli {

RoutingCheck check_routing(std::int64_t tokens, std::int64_t k, const std::int32_t* ti,
                           const float* tw, const std::int32_t* ri, const float* rw) {
  RoutingCheck check;
  check.skip_rows.assign(static_cast<std::size_t>(std::max<std::int64_t>(tokens, 0)), 0);
  const auto row = static_cast<std::size_t>(k);
  for (std::int64_t t = 0; t < tokens; ++t) {
    const std::size_t base = static_cast<std::size_t>(t) * row;
    std::vector<std::int32_t> test(ti + base, ti + base + row), ref(ri + base, ri + base + row);
    std::sort(test.begin(), test.end());
    std::sort(ref.begin(), ref.end());
    if (test == ref) continue;
    const auto weight_of = [&](const std::int32_t* ids, const float* w, std::int32_t id) {
      for (std::size_t j = 0; j < row; ++j) {
        if (ids[base + j] == id) return static_cast<double>(w[base + j]);
      }
      return 0.0;
    };
    std::vector<double> test_only, ref_only;
    for (std::int32_t id : test) {
      if (!std::binary_search(ref.begin(), ref.end(), id)) {
        test_only.push_back(weight_of(ti, tw, id));
      }
    }
    for (std::int32_t id : ref) {
      if (!std::binary_search(test.begin(), test.end(), id)) {
        ref_only.push_back(weight_of(ri, rw, id));
      }
    }
    std::sort(test_only.begin(), test_only.end());
    std::sort(ref_only.begin(), ref_only.end());
    // Duplicated ids can make the two lists differ in length: not a tie.
    bool tie = test_only.size() == ref_only.size();
    for (std::size_t j = 0; tie && j < test_only.size(); ++j) {
      const double scale = std::max({1.0, std::abs(test_only[j]), std::abs(ref_only[j])});
      tie = std::abs(test_only[j] - ref_only[j]) <= kTieWeightTolerance * scale;
    }
    if (tie) {
      ++check.near_ties;
      check.skip_rows[static_cast<std::size_t>(t)] = 1;
    } else {
      ++check.mismatches;
    }
  }
  return check;
}

}  // namespace fusedmoe::cli
