#include "routing_check.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace fusedmoe::cli {
namespace {

TEST(RoutingCheck, SameSetsInAnyOrderAgree) {
  const std::vector<std::int32_t> test = {3, 1, 7, 0}, ref = {1, 3, 0, 7};
  const std::vector<float> tw = {0.4f, 0.3f, 0.2f, 0.1f}, rw = {0.3f, 0.4f, 0.1f, 0.2f};
  const RoutingCheck c = check_routing(2, 2, test.data(), tw.data(), ref.data(), rw.data());
  EXPECT_EQ(c.near_ties, 0);
  EXPECT_EQ(c.mismatches, 0);
  EXPECT_EQ(c.skip_rows, (std::vector<std::uint8_t>{0, 0}));
}

TEST(RoutingCheck, BoundaryExpertsWithTiedWeightsAreNearTies) {
  // Token 0: test chose 5 where the reference chose 6, both at weight ~0.25.
  const std::vector<std::int32_t> test = {2, 5, 1, 4}, ref = {6, 2, 1, 4};
  const std::vector<float> tw = {0.75f, 0.25f, 0.5f, 0.5f}, rw = {0.25002f, 0.74998f, 0.5f, 0.5f};
  const RoutingCheck c = check_routing(2, 2, test.data(), tw.data(), ref.data(), rw.data());
  EXPECT_EQ(c.near_ties, 1);
  EXPECT_EQ(c.mismatches, 0);
  EXPECT_EQ(c.skip_rows, (std::vector<std::uint8_t>{1, 0}));
}

TEST(RoutingCheck, DifferentExpertsWithDistinctWeightsMismatch) {
  const std::vector<std::int32_t> test = {2, 5}, ref = {2, 6};
  const std::vector<float> tw = {0.7f, 0.3f}, rw = {0.8f, 0.2f};
  const RoutingCheck c = check_routing(1, 2, test.data(), tw.data(), ref.data(), rw.data());
  EXPECT_EQ(c.near_ties, 0);
  EXPECT_EQ(c.mismatches, 1);
  EXPECT_EQ(c.skip_rows, (std::vector<std::uint8_t>{0}));
}

TEST(RoutingCheck, DuplicateIdsAreAMismatch) {
  const std::vector<std::int32_t> test = {2, 2}, ref = {2, 3};
  const std::vector<float> tw = {0.5f, 0.5f}, rw = {0.5f, 0.5f};
  const RoutingCheck c = check_routing(1, 2, test.data(), tw.data(), ref.data(), rw.data());
  EXPECT_EQ(c.mismatches, 1);
}

}  // namespace
}  // namespace fusedmoe::cli
