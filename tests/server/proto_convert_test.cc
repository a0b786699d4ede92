#include "server/proto_convert.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/pods_file.h"

namespace kvindex::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

TEST(ProtoConvertTest, PodRoundTripsWithEveryField) {
  Pod pod;
  pod.ns = "ns";
  pod.name = "p";
  pod.ip = "::1";
  pod.phase = "Running";
  pod.labels = {{"a", "1"}};
  pod.annotations = {{"b", "2"}};
  pod.model = "m";
  pod.lora_name = "l";
  pod.kv_events_enabled = false;
  pod.events_port = 6000;
  pod.replay_port = 0;
  pod.dp_size = 4;
  pod.topic = "kv@";
  pod.engine_connects = true;
  const v1::Pod proto = PodToProto(pod);
  EXPECT_EQ(proto.namespace_(), "ns");
  EXPECT_TRUE(proto.has_replay_port());
  EXPECT_TRUE(proto.has_kv_events_enabled());
  EXPECT_TRUE(proto.engine_connects());
  EXPECT_EQ(PodFromProto(proto), pod);
}

TEST(ProtoConvertTest, UnsetOptionalsStayUnset) {
  v1::Pod proto;
  proto.set_name("p");
  const Pod pod = PodFromProto(proto);
  EXPECT_FALSE(pod.replay_port.has_value());  // 5558 by default
  EXPECT_FALSE(pod.kv_events_enabled.has_value());
  EXPECT_FALSE(pod.engine_connects.has_value());  // kvindex connects to the pod
  EXPECT_FALSE(PodToProto(pod).has_replay_port());
  EXPECT_FALSE(PodToProto(pod).has_engine_connects());
  proto.set_replay_port(0);  // explicit 0: no replay socket
  EXPECT_EQ(PodFromProto(proto).replay_port, 0u);
}

TEST(ProtoConvertTest, MatchRequestAndResult) {
  v1::MatchRequest request;
  request.set_model("m");
  request.set_lora_name("l");
  request.add_token_ids(1);
  request.add_token_ids(2);
  request.add_pods("a/b");
  (*request.mutable_medium_weights())["CPU"] = 0.25;
  request.set_cache_salt("salt");
  v1::MultimodalInput* image = request.add_mm_inputs();
  image->set_identifier("img");
  image->set_offset(3);
  image->set_length(5);
  MatchQueryStorage storage;
  const MatchQuery query = MatchQueryFromProto(request, &storage);
  EXPECT_EQ(query.cache_salt, "salt");
  ASSERT_EQ(query.mm_inputs.size(), 1u);
  EXPECT_EQ(query.mm_inputs[0].identifier, "img");
  EXPECT_EQ(query.mm_inputs[0].offset, 3u);
  EXPECT_EQ(query.mm_inputs[0].length, 5u);
  EXPECT_EQ(query.model, "m");
  EXPECT_EQ(query.lora_name, "l");
  EXPECT_THAT(query.token_ids, ::testing::ElementsAre(1u, 2u));
  EXPECT_TRUE(query.block_hashes.empty());
  EXPECT_THAT(query.pods, ::testing::ElementsAre("a/b"));
  EXPECT_THAT(query.medium_weights, UnorderedElementsAre(Pair("CPU", 0.25)));

  MatchResult result;
  result.block_size = 16;
  result.query_blocks = 3;
  result.workers.push_back({.worker = {"a/b", 2}, .matched_blocks = 3, .matched_tokens = 48, .block_size = 16,
                            .blocks_by_medium = {{"GPU", 3}, {"CPU", 1}}, .score = 3});
  v1::MatchResponse response;
  MatchResultToProto(result, &response);
  EXPECT_EQ(response.block_size(), 16u);
  EXPECT_EQ(response.query_blocks(), 3u);
  ASSERT_EQ(response.pods_size(), 1);
  EXPECT_EQ(response.pods(0).pod(), "a/b");
  EXPECT_EQ(response.pods(0).dp_rank(), 2u);
  EXPECT_EQ(response.pods(0).matched_tokens(), 48u);
  EXPECT_THAT(response.pods(0).blocks_by_medium(), UnorderedElementsAre(Pair("GPU", 3u), Pair("CPU", 1u)));
}

TEST(PodsFileTest, ParsesTextFormatSnapshots) {
  absl::StatusOr<std::vector<Pod>> pods = ParsePodSnapshotText(R"(
    # the embedded default
    pods { namespace: "a" name: "x" ip: "10.0.0.1" phase: "Running" replay_port: 0
           labels { key: "model.aibrix.ai/name" value: "m" } }
    pods { namespace: "a" name: "y" dp_size: 2 }
  )");
  ASSERT_TRUE(pods.ok()) << pods.status();
  ASSERT_EQ(pods->size(), 2u);
  EXPECT_EQ((*pods)[0].labels.at("model.aibrix.ai/name"), "m");
  EXPECT_EQ((*pods)[0].replay_port, 0u);
  EXPECT_EQ((*pods)[1].dp_size, 2u);
  EXPECT_TRUE(ParsePodSnapshotText("").ok());
}

TEST(PodsFileTest, ErrorsSayWhere) {
  const absl::StatusOr<std::vector<Pod>> pods = ParsePodSnapshotText("pods {\n  nmae: \"x\"\n}");
  EXPECT_EQ(pods.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pods.status().message(), HasSubstr("2:"));
  EXPECT_THAT(pods.status().message(), HasSubstr("nmae"));
  EXPECT_EQ(LoadPodsFile("/nonexistent/pods").status().code(), absl::StatusCode::kNotFound);
}

// Every counter of KVINDEX_WORKER_COUNTERS reaches ListPods under its own name,
// and GetStats has a field of that name to sum it into.
TEST(ProtoConvertTest, EveryWorkerCounterReachesWorkerInfoByName) {
  WorkerStatus status;
  std::vector<std::pair<std::string, uint64_t>> counters;
  uint64_t value = 100;
#define KVINDEX_SET_DISTINCT(name, help) \
  status.name = ++value;                 \
  counters.emplace_back(#name, status.name);
  KVINDEX_WORKER_COUNTERS(KVINDEX_SET_DISTINCT)
#undef KVINDEX_SET_DISTINCT
  ASSERT_GE(counters.size(), 14u);
  const v1::WorkerInfo info = WorkerInfoToProto(status, std::nullopt);
  const google::protobuf::Reflection* reflection = info.GetReflection();
  for (const auto& [name, expected] : counters) {
    const google::protobuf::FieldDescriptor* field = info.GetDescriptor()->FindFieldByName(name);
    ASSERT_NE(field, nullptr) << "WorkerInfo has no field " << name;
    EXPECT_EQ(reflection->GetUInt64(info, field), expected) << name;
    EXPECT_NE(v1::GetStatsResponse::descriptor()->FindFieldByName(name), nullptr)
        << "GetStatsResponse has no field " << name;
  }
}

TEST(ProtoConvertTest, AHybridWorkersGroupsReachWorkerInfo) {
  WorkerStats stats;
  stats.blocks = 6;
  stats.groups = {GroupStats{0, "full_attention", 0, 16, 6}, GroupStats{1, "sliding_window", 128, 16, 2}};
  const v1::WorkerInfo info = WorkerInfoToProto(WorkerStatus{}, stats);
  ASSERT_EQ(info.groups_size(), 2);
  EXPECT_EQ(info.groups(1).group_idx(), 1u);
  EXPECT_EQ(info.groups(1).kind(), "sliding_window");
  EXPECT_EQ(info.groups(1).sliding_window(), 128u);
  EXPECT_EQ(info.groups(1).block_size(), 16u);
  EXPECT_EQ(info.groups(1).blocks(), 2u);
  EXPECT_EQ(info.groups(0).kind(), "full_attention");
  EXPECT_EQ(info.blocks(), 6u);
  EXPECT_EQ(WorkerInfoToProto(WorkerStatus{}, WorkerStats{}).groups_size(), 0);
}

}  // namespace
}  // namespace kvindex::server
