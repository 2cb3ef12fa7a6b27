// What the subcommands share, on the CPU: how cells are timed on each target, how many weight
// copies the GPU's L2 asks for, memory fits on the GPU, PERF.md's floors for its grid, the order
// of the JSON keys, and what the CUDA path says on a machine that cannot run it.
#include <gtest/gtest.h>

#include <string>

#include "cases.hpp"
#include "fusedmoe/device.hpp"
#include "fusedmoe/presets.hpp"
#include "target.hpp"

namespace fusedmoe::cli {
namespace {

Target gpu_target() {
  Target t;
  t.backend = Backend::cuda;
  t.gpu = true;
  t.device = "NVIDIA H200";
  t.cache_bytes = std::int64_t{60} << 20;
  t.memory_bytes = std::int64_t{141} << 30;
  t.read_gbps = 4570;  // PERF.md's H200
  t.compute_gflops = 690e3;
  return t;
}

LayerConfig preset(std::string_view name) { return find_preset(name)->config; }

TEST(TimingPlan, DefaultsPerTarget) {
  const Options o;
  const TimingPlan cpu = timing_plan(o, Target{}, 16);
  EXPECT_EQ(cpu.reps, kDefaultReps);
  EXPECT_EQ(cpu.warmup, kDefaultWarmup);
  EXPECT_FALSE(cpu.graph);
  const TimingPlan gpu = timing_plan(o, gpu_target(), 16);
  EXPECT_GE(gpu.reps, 20);  // PERF.md: the median of at least 20
  EXPECT_EQ(gpu.reps, kDefaultGpuReps);
  EXPECT_EQ(gpu.warmup, kDefaultGpuWarmup);
  EXPECT_TRUE(gpu.graph);
}

TEST(TimingPlan, GraphsUpTo64TokensUnlessDisabled) {
  Options o;
  EXPECT_TRUE(timing_plan(o, gpu_target(), 1).graph);
  EXPECT_TRUE(timing_plan(o, gpu_target(), 64).graph);
  EXPECT_FALSE(timing_plan(o, gpu_target(), 65).graph);
  o.graph = false;
  EXPECT_FALSE(timing_plan(o, gpu_target(), 1).graph);
  o.reps = 7;
  o.warmup = 0;
  const TimingPlan p = timing_plan(o, gpu_target(), 1);
  EXPECT_EQ(p.reps, 7);
  EXPECT_EQ(p.warmup, 0);
}

TEST(WeightCopies, GpuRotatesPast3xL2) {
  const std::int64_t l2 = std::int64_t{60} << 20;
  // Every preset of the grid is far larger than 3x L2: one copy.
  for (const char* name : {"mixtral-8x7b", "qwen3-30b-a3b", "qwen2-57b-a14b", "deepseek-v3"}) {
    EXPECT_EQ(gpu_weight_copies(preset(name), l2), 1) << name;
  }
  // The smoke test's layer (~2.4 MB): enough copies that they exceed 3x L2 together.
  LayerConfig small;
  small.hidden = 256;
  small.intermediate = 192;
  small.experts = 8;
  small.top_k = 2;
  const int copies = gpu_weight_copies(small, l2);
  EXPECT_GE(static_cast<double>(copies) * static_cast<double>(weight_bytes(small)), 3.0 * l2);
  EXPECT_LT(static_cast<double>(copies - 1) * static_cast<double>(weight_bytes(small)), 3.0 * l2);
  EXPECT_EQ(gpu_target().weight_copies(small), copies);
  // A layer between 1.5x and 3x L2 (400 experts of ~0.3 MB) gets two copies.
  LayerConfig mid = small;
  mid.experts = 400;
  EXPECT_EQ(gpu_weight_copies(mid, l2), 2);
  // An L2 the device did not report counts as 60 MiB.
  EXPECT_EQ(gpu_weight_copies(small, 0), copies);
  // A tiny layer is capped rather than packed thousands of times.
  small.experts = 2;
  small.hidden = small.intermediate = 8;
  EXPECT_EQ(gpu_weight_copies(small, l2), 128);
}

TEST(Layers, NoSharedExpertGivesPerfGrid) {
  Options o;
  o.presets = {"qwen2-57b-a14b", "deepseek-v3", "mixtral-8x7b"};
  o.no_shared_expert = true;
  const std::vector<LayerCase> layers = selected_layers(o);
  ASSERT_EQ(layers.size(), 3u);
  for (const LayerCase& l : layers) EXPECT_EQ(l.config.shared.intermediate, 0) << l.name;
  // The routing stays the model's own (the whole layer is timed).
  EXPECT_EQ(layers[1].config.routing, preset("deepseek-v3").routing);
  // PERF.md's T = 1 floors on the H200 (experts only; the router adds ~1%).
  const Target t = gpu_target();
  const double floors[] = {96, 154, 154};
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerConfig& c = layers[i].config;
    const bench::Floor f =
        t.floor(bench::layer_work(c, 1, static_cast<double>(std::min(c.top_k, c.experts))));
    EXPECT_TRUE(f.memory_bound) << layers[i].name;
    EXPECT_NEAR(f.us, floors[i], 0.03 * floors[i]) << layers[i].name;
  }
  o.no_shared_expert = false;
  EXPECT_GT(selected_layers(o)[0].config.shared.intermediate, 0);
}

TEST(MemoryFit, GpuMemoryReducesExperts) {
  const LayerConfig c = preset("deepseek-v3");
  // Packed copies only (no host copies): 10 GB of GPU memory holds about 96 of 256 experts.
  const MemoryFit fit = fit_in_memory("deepseek-v3", c, 0, 1, std::int64_t{10} << 30);
  ASSERT_TRUE(fit.fits);
  EXPECT_TRUE(fit.reduced);
  EXPECT_LT(fit.config.experts, c.experts);
  EXPECT_EQ(fit.config.experts % c.routing.n_group, 0);
  EXPECT_LE(static_cast<double>(weight_bytes(fit.config)), 0.85 * (std::int64_t{10} << 30));
  EXPECT_NE(fit.note.find("on the GPU"), std::string::npos) << fit.note;
  // A GPU that holds it changes nothing.
  EXPECT_FALSE(fit_in_memory("deepseek-v3", c, 0, 1, std::int64_t{141} << 30).reduced);
}

TEST(Json, SharedKeysFirstForGpuRows) {
  ResultRow row;
  row.preset = "mixtral-8x7b";
  row.config = preset("mixtral-8x7b");
  row.tokens = 16;
  row.backend = Backend::cuda;
  row.m.time = bench::summarize({700, 690, 710});
  row.m.cuda_events = true;
  row.m.graph = true;
  row.m.experts_hit = 8;
  row.m.work = bench::layer_work(row.config, 16, 8);
  row.m.floor = gpu_target().floor(row.m.work);
  row.kernels = "routed m64n128 + narrow n32 (wgmma)";
  const std::string line =
      result_json(row, bench::MachineInfo{}, gpu_target(), "fusedmoe bench").str();
  const std::string head =
      R"({"preset": "mixtral-8x7b", "tokens": 16, "skew": "uniform", "impl": "fusedmoe-cuda", )"
      R"("us_median": 700, "floor_us": )";
  EXPECT_EQ(line.rfind(head, 0), 0u) << line;
  const auto at = [&](const char* key) { return line.find(std::string("\"") + key + "\": "); };
  EXPECT_LT(at("floor_us"), at("bound"));
  EXPECT_LT(at("bound"), at("gpu"));
  EXPECT_LT(at("gpu"), at("commit"));
  EXPECT_LT(at("commit"), at("mode"));
  EXPECT_NE(line.find(R"("mode": "layer")"), std::string::npos) << line;
  EXPECT_NE(line.find(R"("bound": "memory", "gpu": "NVIDIA H200", "commit": ")"), std::string::npos)
      << line;
  for (const char* kv : {R"("graph": true)", R"("timer": "cuda-events")", R"("read_bw_gbps": 4570)",
                         R"("bf16_tflops": 690)", R"("experts_hit": 8)", R"("us_p10": )",
                         R"("us_p90": )", R"("date": )", R"("command": "fusedmoe bench")",
                         R"k("kernels": "routed m64n128 + narrow n32 (wgmma)")k"}) {
    EXPECT_NE(line.find(kv), std::string::npos) << kv << " in " << line;
  }
  // Off the GPU the key is there, null, so every line has the same leading keys.
  row.backend = Backend::cpu;
  const std::string cpu = result_json(row, bench::MachineInfo{}, Target{}, "x").str();
  EXPECT_NE(cpu.find(R"("impl": "fusedmoe-cpu")"), std::string::npos);
  EXPECT_NE(cpu.find(R"("gpu": null, "commit": ")"), std::string::npos) << cpu;
}

TEST(Json, SkewNamesMatchThePeers) {
  EXPECT_EQ(skew_name(0), "uniform");
  EXPECT_EQ(skew_name(1.2), "zipf-1.2");
  EXPECT_EQ(skew_name(2), "zipf-2");
}

// Where this build or machine has no usable GPU, the CUDA path fails with one line saying why.
TEST(Cuda, UnavailableSaysWhy) {
  if (backend_available(Backend::cuda)) GTEST_SKIP() << "a GPU is here";
  const Status s = check_backend(Backend::cuda);
  EXPECT_EQ(s.code(), StatusCode::unsupported_arch);
  EXPECT_EQ(s.message().rfind("backend cuda is not available: ", 0), 0u) << s.message();
  EXPECT_GT(s.message().size(), std::string("backend cuda is not available: ").size());
  EXPECT_EQ(s.to_string().find('\n'), std::string::npos);
  EXPECT_TRUE(check_backend(Backend::cpu).ok());
  EXPECT_FALSE(measure_target(Backend::cuda, bench::MachineInfo{}, true).ok());
}

TEST(Cuda, StagingWithoutGpuIsAnError) {
  if (device::count() > 0) GTEST_SKIP() << "a GPU is here";
  LayerConfig c;
  c.hidden = 64;
  c.intermediate = 32;
  c.experts = 4;
  c.top_k = 2;
  const Result<Workload> host = make_workload(c, 3, 2, 0, 1, false);
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->batches(), 2);
  EXPECT_TRUE(host->device_x.empty());
  EXPECT_EQ(make_workload(c, 3, 2, 0, 1, true).status().code(), StatusCode::unsupported_arch);
}

}  // namespace
}  // namespace fusedmoe::cli
