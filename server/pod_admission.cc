#include "server/pod_admission.h"

#include <string>
#include <utility>

namespace kvindex::server {

absl::Status CheckPodNamespace(const Pod& pod) {
  if (!pod.name.empty() && pod.ns.empty()) return absl::InvalidArgumentError("namespace: required");
  return absl::OkStatus();
}

PodAck AdmitUpsert(SubscriptionManager& manager, const Pod& pod) {
  if (absl::Status status = CheckPodNamespace(pod); !status.ok()) {
    return PodAck{.pod = PodKey(pod), .outcome = PodOutcome::kRejected, .reason = std::string(status.message())};
  }
  return manager.Upsert(pod);
}

std::vector<PodAck> AdmitSnapshot(SubscriptionManager& manager, const std::vector<Pod>& pods) {
  std::vector<Pod> admitted;
  admitted.reserve(pods.size());
  for (const Pod& pod : pods) {
    if (CheckPodNamespace(pod).ok()) admitted.push_back(pod);
  }
  std::vector<PodAck> managed = manager.ApplySnapshot(admitted);
  std::vector<PodAck> acks;
  acks.reserve(managed.size() + pods.size() - admitted.size());
  size_t next = 0;
  for (const Pod& pod : pods) {
    if (absl::Status status = CheckPodNamespace(pod); !status.ok()) {
      acks.push_back(
          PodAck{.pod = PodKey(pod), .outcome = PodOutcome::kRejected, .reason = std::string(status.message())});
    } else {
      acks.push_back(std::move(managed[next++]));
    }
  }
  for (; next < managed.size(); ++next) acks.push_back(std::move(managed[next]));
  return acks;
}

}  // namespace kvindex::server
