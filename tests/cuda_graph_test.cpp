// CUDA graphs: forward() captured once on a stream and replayed with new inputs written into the
// same device buffers, as a serving loop does. Each replay must match the reference on that
// round's inputs, leave no poison and no write outside the outputs, count invalid ids from
// inside the graph, and give the same bits as a plain forward on the same inputs.
// Skipped without a GPU.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.hpp"

namespace fusedmoe {
namespace {

struct GraphCase {
  std::string name;
  LayerConfig config;
  std::int64_t tokens = 1;
  test::Options options;
};

void PrintTo(const GraphCase& c, std::ostream* os) { *os << c.name; }

std::vector<GraphCase> graph_cases() {
  std::vector<GraphCase> v;
  // softmax top-k, renormalised
  v.push_back({"Softmax", test::make_config(256, 192, 16, 4), 77, {}});
  {
    // precomputed routing with ids outside [0, E): counted by the replayed kernels
    LayerConfig c = test::make_config(256, 192, 16, 4);
    c.routing.kind = RoutingKind::precomputed;
    test::Options o;
    o.ids = test::Ids::invalid;
    o.zipf_s = 1.0;
    v.push_back({"PrecomputedInvalidIds", c, 77, o});
  }
  {
    // DeepSeek-like grouped routing with an ungated shared expert, strided x and out
    LayerConfig c = test::deepseek_like(256, 192, 32, 8, 8, 4);
    c.shared = {96, false};
    test::Options o;
    o.x_row_stride = 256 + 24;
    o.out_row_stride = 256 + 8;
    v.push_back({"GroupedSharedStrided", c, 77, o});
  }
  return v;
}

class CudaGraph : public ::testing::TestWithParam<GraphCase> {
 protected:
  void SetUp() override { FUSEDMOE_TEST_REQUIRE_BACKEND(Backend::cuda); }
};

TEST_P(CudaGraph, ReplaysWithNewInputs) {
  const GraphCase& gc = GetParam();
  const LayerConfig& c = gc.config;
  test::Options o = gc.options;
  o.seed = test::case_seed("round 0");
  const test::Problem first(c, gc.tokens, o);
  SCOPED_TRACE(first.describe());
  Result<Layer> layer = test::make_layer(c, first.weights().view(), Backend::cuda);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  Result<Layer> reference = test::make_layer(c, first.weights().view(), Backend::reference);
  ASSERT_TRUE(reference.ok()) << reference.status().to_string();

  // device buffers once; the graph holds their addresses
  Result<test::DeviceRun> run =
      test::DeviceRun::allocate(layer.value(), first, test::poisoned_outputs(first, c.dtype));
  ASSERT_TRUE(run.ok()) << run.status().to_string();
  Result<device::Stream> stream = device::Stream::create();
  ASSERT_TRUE(stream.ok()) << stream.status().to_string();
  const ForwardArgs args = run->args(stream->handle());
  Result<device::Graph> graph =
      device::Graph::capture(stream.value(), [&] { return layer->forward(args); });
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  // capturing runs nothing
  EXPECT_EQ(layer->take_invalid_id_count(), 0);

  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    // new x (and ids) with the same weights, written into the same device buffers
    o.seed = test::case_seed("round " + std::to_string(round));
    const test::Problem p(c, gc.tokens, o, first.weights_ptr);
    test::RunResult got = test::poisoned_outputs(p, c.dtype);
    Status s = run->upload(p, got);
    ASSERT_TRUE(s.ok()) << s.to_string();
    s = graph->launch(stream.value());
    ASSERT_TRUE(s.ok()) << s.to_string();
    s = stream->synchronize();
    ASSERT_TRUE(s.ok()) << s.to_string();
    got.status = run->download(got);
    got.invalid_ids = layer->take_invalid_id_count();
    const test::RunResult want = test::run_layer(reference.value(), p, DType::f32);
    test::check_against(p, want, got);

    // a plain forward on the same inputs: the same bits
    const test::RunResult plain = test::run_layer(layer.value(), p, c.dtype);
    ASSERT_TRUE(plain.status.ok()) << plain.status.to_string();
    EXPECT_TRUE(test::output_bytes(plain) == test::output_bytes(got));
    EXPECT_TRUE(plain.ids_out.element_bytes() == got.ids_out.element_bytes());
    EXPECT_TRUE(plain.weights_out.element_bytes() == got.weights_out.element_bytes());
    EXPECT_EQ(plain.invalid_ids, got.invalid_ids);
  }
}

INSTANTIATE_TEST_SUITE_P(CudaGraph, CudaGraph, ::testing::ValuesIn(graph_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace fusedmoe
