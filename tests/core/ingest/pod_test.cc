#include "core/ingest/pod.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::HasSubstr;

// A pod the seed would subscribe to.
Pod GoodPod() {
  Pod pod;
  pod.ns = "default";
  pod.name = "vllm-0";
  pod.ip = "10.0.0.7";
  pod.phase = "Running";
  pod.labels[kKvEventsEnabledLabel] = "true";
  pod.labels[kModelNameKey] = "llama";
  return pod;
}

void ExpectInvalid(const Pod& pod, const std::string& message, const PodLimits& limits = {}) {
  absl::Status status = ValidatePod(pod, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(message));
}

TEST(PodKeyTest, NamespaceSlashName) { EXPECT_EQ(PodKey(GoodPod()), "default/vllm-0"); }

TEST(ValidatePodTest, AcceptsGoodPodsIncludingIpv6AndNoIp) {
  Pod pod = GoodPod();
  EXPECT_TRUE(ValidatePod(pod).ok());
  pod.ip = "fd00::1";
  EXPECT_TRUE(ValidatePod(pod).ok());
  pod.ip = "";  // pending pods have none yet
  EXPECT_TRUE(ValidatePod(pod).ok());
  pod.events_port = 65535;
  pod.replay_port = 0;
  EXPECT_TRUE(ValidatePod(pod).ok());
}

TEST(ValidatePodTest, RejectsMissingOrBadName) {
  Pod pod = GoodPod();
  pod.name = "";
  ExpectInvalid(pod, "name: required");
  pod.name = "a/b";
  ExpectInvalid(pod, "name: must not contain '/'");
  pod.name = std::string(254, 'x');
  ExpectInvalid(pod, "name: 254 bytes, limit 253");
}

TEST(ValidatePodTest, RejectsPortsOutOfRange) {
  Pod pod = GoodPod();
  pod.events_port = 65536;
  ExpectInvalid(pod, "events_port: 65536 is not a port");
  pod = GoodPod();
  pod.replay_port = 70000;
  ExpectInvalid(pod, "replay_port: 70000 is not a port");
  pod = GoodPod();
  pod.events_port = 65535;
  pod.dp_size = 2;
  ExpectInvalid(pod, "events_port: 65535 + dp_size 2 - 1 exceeds 65535");
  pod = GoodPod();
  pod.replay_port = 65534;
  pod.dp_size = 3;
  ExpectInvalid(pod, "replay_port: 65534 + dp_size 3 - 1 exceeds 65535");
}

TEST(ValidatePodTest, RejectsIpThatIsNotALiteral) {
  Pod pod = GoodPod();
  for (const char* ip : {"vllm.svc", "10.0.0.256", "[fd00::1]", "10.0.0.1:5557", "fe80::1%eth0"}) {
    pod.ip = ip;
    ExpectInvalid(pod, "is not an IPv4/IPv6 literal");
  }
}

TEST(ValidatePodTest, RejectsAbsurdDpSize) {
  Pod pod = GoodPod();
  pod.dp_size = 1025;
  ExpectInvalid(pod, "dp_size: 1025 exceeds 1024");
  PodLimits limits;
  limits.max_dp_size = 4;
  pod.dp_size = 5;
  ExpectInvalid(pod, "dp_size: 5 exceeds 4", limits);
}

TEST(ValidatePodTest, RejectsTooManyOrTooLargeLabels) {
  PodLimits limits;
  limits.max_labels = 3;
  limits.max_label_bytes = 16;
  Pod pod = GoodPod();
  EXPECT_TRUE(ValidatePod(pod, {}).ok());
  pod.annotations["a"] = "1";
  pod.annotations["b"] = "2";
  ExpectInvalid(pod, "labels: 4 labels and annotations, limit 3", limits);
  pod = GoodPod();
  limits.max_label_bytes = 64;
  pod.labels["k"] = std::string(65, 'v');
  ExpectInvalid(pod, "labels: entry k exceeds 64 bytes", limits);
  pod = GoodPod();
  pod.annotations[std::string(65, 'k')] = "v";
  ExpectInvalid(pod, "annotations: entry", limits);
}

// Every limit README states is inclusive: a pod exactly at each one is valid
// and planned as it says; one past it is not.
TEST(ValidatePodTest, AcceptsPodsExactlyAtEveryLimit) {
  Pod pod = GoodPod();
  pod.name = std::string(253, 'n');
  pod.ns = std::string(253, 's');
  pod.dp_size = 1024;
  pod.events_port = 65535 - 1023;  // the last rank on 65535
  pod.replay_port = 65535 - 1023;
  EXPECT_TRUE(ValidatePod(pod).ok()) << ValidatePod(pod);
  PodPlan plan = PlanPod(pod);
  EXPECT_TRUE(plan.subscribable) << plan.reason;
  EXPECT_EQ(plan.dp_size, 1024u);
  EXPECT_EQ(plan.events_port, 64512u);
  EXPECT_EQ(plan.replay_port, 64512u);
  EXPECT_EQ(PodKey(pod), std::string(253, 's') + "/" + std::string(253, 'n'));

  pod.ns = std::string(254, 's');
  ExpectInvalid(pod, "namespace: 254 bytes, limit 253");
  pod.ns = "default";
  pod.events_port = 64513;
  ExpectInvalid(pod, "events_port: 64513 + dp_size 1024 - 1 exceeds 65535");
  pod.events_port = 64512;
  pod.replay_port = 64513;
  ExpectInvalid(pod, "replay_port: 64513 + dp_size 1024 - 1 exceeds 65535");
  pod.replay_port = 0;  // no replay: no range to check
  EXPECT_TRUE(ValidatePod(pod).ok());

  // Labels and annotations: 256 in all, each key and value up to 64 KiB.
  pod = GoodPod();
  for (int i = 0; pod.labels.size() < 200; ++i) pod.labels["l" + std::to_string(i)] = "v";
  for (int i = 0; pod.annotations.size() < 56; ++i) pod.annotations["a" + std::to_string(i)] = "v";
  pod.labels[std::string(64 << 10, 'k')] = std::string(64 << 10, 'v');
  pod.labels.erase("l0");
  EXPECT_TRUE(ValidatePod(pod).ok()) << ValidatePod(pod);
  pod.annotations["one-more"] = "v";
  ExpectInvalid(pod, "labels: 257 labels and annotations, limit 256");
  pod.annotations.erase("one-more");
  pod.labels[std::string(64 << 10, 'k')] = std::string((64 << 10) + 1, 'v');
  ExpectInvalid(pod, "labels: entry");
  // Strings (model, lora_name, phase, topic) up to 64 KiB.
  pod = GoodPod();
  pod.model = std::string(64 << 10, 'm');
  EXPECT_TRUE(ValidatePod(pod).ok());
  pod.model += "m";
  ExpectInvalid(pod, "model: 65537 bytes, limit 65536");
}

TEST(PlanPodTest, DefaultsPortsAndDpSize) {
  PodPlan plan = PlanPod(GoodPod());
  EXPECT_TRUE(plan.subscribable) << plan.reason;
  EXPECT_EQ(plan.model, "llama");
  EXPECT_EQ(plan.events_port, kDefaultEventsPort);
  EXPECT_EQ(plan.replay_port, kDefaultReplayPort);
  EXPECT_EQ(plan.dp_size, 1u);
  EXPECT_EQ(plan.default_lora, "");
}

TEST(PlanPodTest, ExplicitFieldsOverride) {
  Pod pod = GoodPod();
  pod.events_port = 6000;
  pod.replay_port = 0;
  pod.dp_size = 4;
  pod.model = "mistral";
  pod.labels[kLoraIdLabel] = "7";
  PodPlan plan = PlanPod(pod);
  EXPECT_EQ(plan.events_port, 6000u);
  EXPECT_EQ(plan.replay_port, std::nullopt);
  EXPECT_EQ(plan.dp_size, 4u);
  EXPECT_EQ(plan.model, "mistral");
  EXPECT_EQ(plan.default_lora, "7");
  pod.lora_name = "sql-adapter";
  EXPECT_EQ(PlanPod(pod).default_lora, "sql-adapter");
}

TEST(PlanPodTest, ModelFromAnnotationWhenNoLabel) {
  Pod pod = GoodPod();
  pod.labels.erase(kModelNameKey);
  pod.annotations[kModelNameKey] = "from-annotation";
  PodPlan plan = PlanPod(pod);
  EXPECT_TRUE(plan.subscribable) << plan.reason;
  EXPECT_EQ(plan.model, "from-annotation");
}

TEST(PlanPodTest, ExplicitEnabledFieldWinsOverLabel) {
  Pod pod = GoodPod();
  pod.labels.erase(kKvEventsEnabledLabel);
  pod.kv_events_enabled = true;
  EXPECT_TRUE(PlanPod(pod).subscribable);
  pod.labels[kKvEventsEnabledLabel] = "true";
  pod.kv_events_enabled = false;
  PodPlan plan = PlanPod(pod);
  EXPECT_FALSE(plan.subscribable);
  EXPECT_THAT(plan.reason, HasSubstr("disabled by the pod's kv_events_enabled field"));
}

// The seed's rule table: each row breaks exactly one rule.
struct RuleRow {
  const char* name;
  void (*mutate)(Pod&);
  const char* reason;
};

TEST(PlanPodTest, SeedRuleTable) {
  const RuleRow rows[] = {
      {"no label", [](Pod& p) { p.labels.erase(kKvEventsEnabledLabel); }, "kv events not enabled"},
      {"label false", [](Pod& p) { p.labels[kKvEventsEnabledLabel] = "false"; },
       "kv events not enabled"},
      {"label TRUE", [](Pod& p) { p.labels[kKvEventsEnabledLabel] = "TRUE"; },
       "kv events not enabled"},
      {"label True", [](Pod& p) { p.labels[kKvEventsEnabledLabel] = "True"; },
       "kv events not enabled"},
      {"Pending", [](Pod& p) { p.phase = "Pending"; }, "phase is \"Pending\", not Running"},
      {"no phase", [](Pod& p) { p.phase = ""; }, "not Running"},
      {"no IP", [](Pod& p) { p.ip = ""; }, "pod has no IP"},
      {"no model", [](Pod& p) { p.labels.erase(kModelNameKey); }, "model unknown"},
      {"empty model label", [](Pod& p) { p.labels[kModelNameKey] = ""; }, "model unknown"},
  };
  for (const RuleRow& row : rows) {
    Pod pod = GoodPod();
    row.mutate(pod);
    PodPlan plan = PlanPod(pod);
    EXPECT_FALSE(plan.subscribable) << row.name;
    EXPECT_THAT(plan.reason, HasSubstr(row.reason)) << row.name;
  }
  EXPECT_TRUE(PlanPod(GoodPod()).subscribable);
}

}  // namespace
}  // namespace kvindex
