#include "core/ingest/internal/subscription_identity.h"

#include <vector>

#include "absl/strings/str_join.h"

namespace kvindex {

SubscriptionIdentity IdentityOf(const Pod& pod, const PodPlan& plan) {
  return {pod.ip,           plan.events_port,   plan.replay_port, plan.dp_size, plan.model,
          plan.default_lora, pod.topic, plan.engine_connects};
}

std::string Changes(const SubscriptionIdentity& a, const SubscriptionIdentity& b) {
  std::vector<std::string> out;
  if (a.ip != b.ip) out.push_back("ip");
  if (a.events_port != b.events_port) out.push_back("events_port");
  if (a.replay_port != b.replay_port) out.push_back("replay_port");
  if (a.dp_size != b.dp_size) out.push_back("dp_size");
  if (a.model != b.model) out.push_back("model");
  if (a.default_lora != b.default_lora) out.push_back("lora");
  if (a.topic != b.topic) out.push_back("topic");
  if (a.engine_connects != b.engine_connects) out.push_back("engine_connects");
  return absl::StrJoin(out, ", ");
}

}  // namespace kvindex
