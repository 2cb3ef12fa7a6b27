// The harness's arithmetic and text: medians, the floor, JSON escaping, durations.
#include <gtest/gtest.h>

#include <limits>

#include "fusedmoe/presets.hpp"
#include "fusedmoe_bench/json.hpp"
#include "fusedmoe_bench/progress.hpp"
#include "fusedmoe_bench/roofline.hpp"
#include "fusedmoe_bench/run_info.hpp"
#include "fusedmoe_bench/timing.hpp"

namespace fusedmoe::bench {
namespace {

TEST(Timing, MedianMinMax) {
  const TimingStats odd = summarize({5, 1, 3});
  EXPECT_EQ(odd.median_us, 3);
  EXPECT_EQ(odd.min_us, 1);
  EXPECT_EQ(odd.max_us, 5);
  EXPECT_EQ(odd.reps, 3);
  EXPECT_EQ(summarize({4, 1, 3, 2}).median_us, 2.5);
  EXPECT_EQ(summarize({}).reps, 0);
}

TEST(Timing, Percentiles) {
  // 0, 1, ..., 100 shuffled: the q-quantile is 100·q.
  std::vector<double> v;
  for (int i = 100; i >= 0; --i) v.push_back((i * 37) % 101);
  const TimingStats s = summarize(v);
  EXPECT_DOUBLE_EQ(s.p10_us, 10);
  EXPECT_DOUBLE_EQ(s.median_us, 50);
  EXPECT_DOUBLE_EQ(s.p90_us, 90);
  EXPECT_DOUBLE_EQ(quantile({1, 2}, 0.25), 1.25);  // between ranks
  EXPECT_DOUBLE_EQ(quantile({7}, 0.9), 7);
  EXPECT_EQ(quantile({}, 0.5), 0);
}

TEST(Timing, TimeRepsRunsWarmupThenReps) {
  std::vector<int> seen;
  const auto stats = time_reps(2, 3, [&](int i) {
    seen.push_back(i);
    return true;
  });
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->reps, 3);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_FALSE(time_reps(0, 3, [](int i) { return i < 1; }).has_value());
}

TEST(Roofline, Qwen3AtOneToken) {
  const LayerConfig c = find_preset("qwen3-30b-a3b")->config;
  // 8 experts x 3·H·I bf16 + x and out + the fp32 router.
  const double bytes = 8.0 * 3 * 2048 * 768 * 2 + 2.0 * 2048 * 2 + 128.0 * 2048 * 4;
  const double flops = 2.0 * 8 * 3 * 2048 * 768 + 2.0 * 2048 * 128;
  const LayerWork w = layer_work(c, 1, 8);
  EXPECT_DOUBLE_EQ(w.bytes, bytes);
  EXPECT_DOUBLE_EQ(w.flops, flops);
  const Floor f = floor_of(w, 1000.0, 1e6);  // 1 TB/s, 1 PFLOP/s: memory-bound
  EXPECT_TRUE(f.memory_bound);
  EXPECT_EQ(f.bound(), "memory");
  EXPECT_DOUBLE_EQ(f.us, bytes / 1e6);
  const Floor g = floor_of(w, 1e9, 1.0);  // compute-bound
  EXPECT_FALSE(g.memory_bound);
  EXPECT_DOUBLE_EQ(g.us, flops / 1e3);
}

TEST(Roofline, SharedExpertAndPrecomputedRouting) {
  LayerConfig c = find_preset("deepseek-v3")->config;
  c.routing.kind = RoutingKind::precomputed;  // no router work
  const LayerWork w = layer_work(c, 4, 10);
  EXPECT_DOUBLE_EQ(w.bytes,
                   10.0 * 3 * 7168 * 2048 * 2 + 3.0 * 7168 * 2048 * 2 + 2.0 * 4 * 7168 * 2);
  EXPECT_DOUBLE_EQ(w.flops, 2.0 * 4 * 8 * 3 * 7168 * 2048 + 2.0 * 4 * 3 * 7168 * 2048);
  EXPECT_NEAR(expected_experts_hit(c, 1), 8.0, 1e-9);
  EXPECT_NEAR(expected_experts_hit(c, 100000), 256.0, 1e-6);
}

TEST(Json, QuotesAndEscapes) {
  EXPECT_EQ(json_quote("plain"), "\"plain\"");
  EXPECT_EQ(json_quote("a\"b\\c\nd\te"), "\"a\\\"b\\\\c\\nd\\te\"");
  EXPECT_EQ(json_quote(std::string("\x01", 1)), "\"\\u0001\"");
  EXPECT_EQ(json_quote("µs"), "\"µs\"");                    // valid UTF-8 passes through
  EXPECT_EQ(json_quote("\xff"), "\"\\ufffd\"");             // invalid bytes do not
  EXPECT_EQ(json_quote("\xe2\x82"), "\"\\ufffd\\ufffd\"");  // truncated sequence
}

TEST(Json, ObjectFields) {
  JsonObject j;
  j.add("s", "x")
      .add("i", std::int64_t{-3})
      .add("d", 0.5)
      .add("b", true)
      .add("n", std::numeric_limits<double>::infinity());
  j.add_null("z");
  EXPECT_EQ(j.str(), R"({"s": "x", "i": -3, "d": 0.5, "b": true, "n": null, "z": null})");
  EXPECT_EQ(JsonObject().str(), "{}");
}

TEST(RunInfo, CommandLineQuoting) {
  const char* argv[] = {"fusedmoe", "bench", "--json", "my results.jsonl", "it's"};
  EXPECT_EQ(command_line(5, argv), "fusedmoe bench --json 'my results.jsonl' 'it'\\''s'");
  const std::string now = utc_now_iso8601();
  ASSERT_EQ(now.size(), 20u);
  EXPECT_EQ(now[10], 'T');
  EXPECT_EQ(now.back(), 'Z');
  EXPECT_FALSE(build_commit().empty());
}

TEST(Progress, Durations) {
  EXPECT_EQ(format_duration(0.25), "250 ms");
  EXPECT_EQ(format_duration(12.2), "12 s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
}

}  // namespace
}  // namespace fusedmoe::bench
