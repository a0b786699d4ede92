// libFuzzer target: pod descriptions from outside. The first byte picks the
// form of the rest of the input:
//   0: a serialized kvindex.v1.PodUpdate (what SyncPods receives), through
//      PodFromProto, ValidatePod, PlanPod and PodToProto;
//   1: a kvindex.v1.PodSnapshot in text format (--pods_file), through
//      ParsePodSnapshotText and the same checks;
//   else: a core Pod built field by field (FuzzedDataProvider).
// Invariants: a pod ValidatePod accepts has a port range inside 1..65535, a
// bounded dp_size and an IP literal; PlanPod says why when not subscribable;
// proto -> core -> proto -> core is the identity.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/ingest/internal/bind_receiver.h"
#include "core/ingest/internal/subscriber.h"
#include "core/ingest/pod.h"
#include "kvindex/v1/kvindex.pb.h"
#include "server/pods_file.h"
#include "server/proto_convert.h"

namespace {

using kvindex::Pod;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

void CheckPod(const Pod& pod) {
  const kvindex::PodLimits limits;
  const absl::Status valid = kvindex::ValidatePod(pod, limits);
  const kvindex::PodPlan plan = kvindex::PlanPod(pod);
  (void)kvindex::PodKey(pod);
  if (valid.ok()) {
    Check(!pod.name.empty(), "valid pod has a name");
    Check(plan.dp_size >= 1 && plan.dp_size <= limits.max_dp_size, "valid pod's dp_size is bounded");
    Check(plan.events_port >= 1 && uint64_t{plan.events_port} + plan.dp_size - 1 <= 65535,
          "valid pod's events ports fit");
    if (plan.replay_port.has_value()) {
      Check(*plan.replay_port >= 1 && uint64_t{*plan.replay_port} + plan.dp_size - 1 <= 65535,
            "valid pod's replay ports fit");
    }
    Check(pod.labels.size() + pod.annotations.size() <= limits.max_labels, "valid pod's labels are bounded");
    if (plan.subscribable) {
      Check(!pod.ip.empty() && !plan.model.empty(), "subscribable pod has an IP and a model");
      Check(kvindex::NormalizeIp(pod.ip).has_value(), "subscribable pod's IP is a literal");
      (void)kvindex::TcpEndpoint(pod.ip, plan.events_port + plan.dp_size - 1);
    }
  } else {
    Check(valid.code() == absl::StatusCode::kInvalidArgument, "invalid pods are INVALID_ARGUMENT");
  }
  if (!plan.subscribable) Check(!plan.reason.empty(), "an unsubscribable pod says why");
  const Pod again = kvindex::server::PodFromProto(kvindex::server::PodToProto(pod));
  Check(again == pod, "Pod -> proto -> Pod is the identity");
}

Pod FuzzedPod(FuzzedDataProvider& in) {
  Pod pod;
  pod.ns = in.ConsumeRandomLengthString(300);
  pod.name = in.ConsumeRandomLengthString(300);
  pod.ip = in.ConsumeRandomLengthString(64);
  pod.phase = in.ConsumeBool() ? "Running" : in.ConsumeRandomLengthString(16);
  const int labels = in.ConsumeIntegralInRange(0, 300);
  for (int i = 0; i < labels && in.remaining_bytes() > 0; ++i) {
    std::string key = in.ConsumeRandomLengthString(64);
    std::string value = in.ConsumeRandomLengthString(64);
    (in.ConsumeBool() ? pod.labels : pod.annotations)[std::move(key)] = std::move(value);
  }
  if (in.ConsumeBool()) pod.labels[kvindex::kKvEventsEnabledLabel] = in.ConsumeBool() ? "true" : "True";
  if (in.ConsumeBool()) pod.labels[kvindex::kModelNameKey] = in.ConsumeRandomLengthString(32);
  pod.model = in.ConsumeRandomLengthString(32);
  pod.lora_name = in.ConsumeRandomLengthString(32);
  if (in.ConsumeBool()) pod.kv_events_enabled = in.ConsumeBool();
  pod.events_port = in.ConsumeIntegral<uint32_t>();
  if (in.ConsumeBool()) pod.replay_port = in.ConsumeIntegral<uint32_t>();
  pod.dp_size = in.ConsumeIntegral<uint32_t>();
  pod.topic = in.ConsumeRandomLengthString(32);
  return pod;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  if (mode == 0) {
    kvindex::v1::PodUpdate update;
    if (!update.ParseFromArray(data, static_cast<int>(size))) return 0;
    if (update.has_upsert()) CheckPod(kvindex::server::PodFromProto(update.upsert()));
    for (const kvindex::v1::Pod& pod : update.snapshot().pods()) CheckPod(kvindex::server::PodFromProto(pod));
  } else if (mode == 1) {
    absl::StatusOr<std::vector<Pod>> pods =
        kvindex::server::ParsePodSnapshotText(absl::string_view(reinterpret_cast<const char*>(data), size));
    if (!pods.ok()) return 0;
    for (const Pod& pod : *pods) CheckPod(pod);
  } else {
    FuzzedDataProvider in(data, size);
    CheckPod(FuzzedPod(in));
  }
  return 0;
}
