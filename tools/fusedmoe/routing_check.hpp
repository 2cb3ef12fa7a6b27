// Comparing the routing two backends chose, token by token, as sets of expert ids.
#pragma once

#include <cstdint>
#include <vector>

namespace fusedmoe::cli {

// Two experts whose routing weights differ by at most this (relative to max(1, |w|)) are a
// near-tie: a backend that picks the other one rounded the scores differently, it did not route
// wrongly (CONTRACT.md: ids are compared as sets where weights tie).
inline constexpr double kTieWeightTolerance = 1e-4;

struct RoutingCheck {
  std::int64_t near_ties = 0;           // tokens whose sets differ only by near-tied experts
  std::int64_t mismatches = 0;          // tokens whose sets differ otherwise
  std::vector<std::uint8_t> skip_rows;  // [tokens]: 1 for near-tie tokens, whose outputs differ
                                        // legitimately and are left out of the comparison
};

// ids [tokens, k] int32 and weights [tokens, k] f32, row-major, of the backend under test and of
// the reference. Where a token's sets differ, the weights of the experts only one side chose
// (each from the side that chose it) are paired in sorted order; all pairs within the tolerance
// make a near-tie, anything else a mismatch.
RoutingCheck check_routing(std::int64_t tokens, std::int64_t k, const std::int32_t* test_ids,
                           const float* test_weights, const std::int32_t* ref_ids,
                           const float* ref_weights);

}  // namespace fusedmoe::cli
