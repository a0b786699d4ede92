#pragma once

// Pod: an engine pod as the control plane describes it (pure C++ mirror of
// kvindex.v1.Pod), plus the rules that decide whether and how to follow it.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace kvindex {

inline constexpr uint32_t kDefaultEventsPort = 5557;
inline constexpr uint32_t kDefaultReplayPort = 5558;
inline constexpr char kModelNameKey[] = "model.aibrix.ai/name";              // label, else annotation
inline constexpr char kKvEventsEnabledLabel[] = "model.aibrix.ai/kv-events-enabled";  // == "true"
inline constexpr char kLoraIdLabel[] = "model.aibrix.ai/lora-id";

struct Pod {
  std::string ns;  // Kubernetes namespace
  std::string name;
  std::string ip;     // IPv4 or IPv6 literal; empty while the pod has none
  std::string phase;  // "Running", "Pending", ...
  absl::flat_hash_map<std::string, std::string> labels;
  absl::flat_hash_map<std::string, std::string> annotations;
  // Optional overrides of what the labels say.
  std::string model;
  std::string lora_name;
  std::optional<bool> kv_events_enabled;
  uint32_t events_port = 0;             // 0: kDefaultEventsPort
  std::optional<uint32_t> replay_port;  // nullopt: kDefaultReplayPort; 0: no replay socket
  uint32_t dp_size = 0;                 // 0: 1
  std::string topic;                    // ZMQ topic filter; empty: all
  // true: the pod's engines connect their PUB sockets to kvindex's bind
  // endpoint (--events_bind); unset or false: kvindex connects to the pod.
  std::optional<bool> engine_connects;

  bool operator==(const Pod&) const = default;
};

// Limits on a pod description coming from outside.
struct PodLimits {
  uint32_t max_dp_size = 1024;
  size_t max_labels = 256;            // labels + annotations
  size_t max_label_bytes = 64 << 10;  // one key or value
  size_t max_name_bytes = 253;        // namespace, name
};

// "namespace/name".
std::string PodKey(const Pod& pod);

// OK, or INVALID_ARGUMENT naming the bad field: no name, port out of range,
// IP not a literal, absurd dp_size, oversized labels.
[[nodiscard]] absl::Status ValidatePod(const Pod& pod, const PodLimits& limits = {});

// How kvindex follows a pod, derived from its description by the seed's rules.
struct PodPlan {
  bool subscribable = false;
  std::string reason;         // why not, when !subscribable
  std::string model;          // field, else label, else annotation model.aibrix.ai/name
  std::string default_lora;   // field, else label model.aibrix.ai/lora-id
  uint32_t events_port = kDefaultEventsPort;
  std::optional<uint32_t> replay_port;  // nullopt: none
  uint32_t dp_size = 1;
  bool engine_connects = false;  // live events come through the bind endpoint, routed by topic
};

// Applies the rules: subscribable = events enabled (label == "true" exactly, or
// the explicit field), phase Running, non-empty IP, model known.
PodPlan PlanPod(const Pod& pod);

}  // namespace kvindex
