#pragma once

// SubscriptionIdentity: what a pod's subscription depends on. When a pod is
// pushed again, a change in it means unsubscribe + resubscribe; anything else
// (labels, phase while still running, ...) is an update in place.
//
// Pure functions; thread-safe.

#include <cstdint>
#include <optional>
#include <string>

#include "core/ingest/pod.h"

namespace kvindex {

struct SubscriptionIdentity {
  std::string ip;
  uint32_t events_port = 0;
  std::optional<uint32_t> replay_port;
  uint32_t dp_size = 0;
  std::string model;
  std::string default_lora;
  std::string topic;
  bool engine_connects = false;
};

// The identity of `pod`'s subscription under `plan` (PlanPod(pod)).
SubscriptionIdentity IdentityOf(const Pod& pod, const PodPlan& plan);

// Names of the fields that differ, e.g. "ip, dp_size"; empty when none.
std::string Changes(const SubscriptionIdentity& a, const SubscriptionIdentity& b);

}  // namespace kvindex
