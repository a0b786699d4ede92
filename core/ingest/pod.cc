#include "core/ingest/pod.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kvindex {
namespace {

constexpr uint32_t kMaxPort = 65535;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// True when `ip` is an IPv4 or IPv6 literal (no brackets, no zone, no port).
bool IsIpLiteral(const std::string& ip) {
  in6_addr buf;
  return inet_pton(AF_INET, ip.c_str(), &buf) == 1 || inet_pton(AF_INET6, ip.c_str(), &buf) == 1;
}

absl::Status ValidateName(absl::string_view field, const std::string& value, bool required,
                          const PodLimits& limits) {
  if (value.empty()) return required ? Invalid(field, "required") : absl::OkStatus();
  if (value.size() > limits.max_name_bytes) {
    return Invalid(field, absl::StrCat(value.size(), " bytes, limit ", limits.max_name_bytes));
  }
  if (value.find('/') != std::string::npos) return Invalid(field, "must not contain '/'");
  return absl::OkStatus();
}

absl::Status ValidatePortRange(absl::string_view field, uint32_t first, uint32_t count) {
  if (first > kMaxPort) return Invalid(field, absl::StrCat(first, " is not a port"));
  if (uint64_t{first} + count - 1 > kMaxPort) {
    return Invalid(field, absl::StrCat(first, " + dp_size ", count, " - 1 exceeds ", kMaxPort));
  }
  return absl::OkStatus();
}

absl::Status ValidateMap(absl::string_view field,
                         const absl::flat_hash_map<std::string, std::string>& map,
                         const PodLimits& limits) {
  for (const auto& [key, value] : map) {
    if (key.size() > limits.max_label_bytes || value.size() > limits.max_label_bytes) {
      return Invalid(field, absl::StrCat("entry ", key.substr(0, 64), " exceeds ",
                                         limits.max_label_bytes, " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateString(absl::string_view field, const std::string& value,
                            const PodLimits& limits) {
  if (value.size() > limits.max_label_bytes) {
    return Invalid(field, absl::StrCat(value.size(), " bytes, limit ", limits.max_label_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

std::string PodKey(const Pod& pod) { return absl::StrCat(pod.ns, "/", pod.name); }

absl::Status ValidatePod(const Pod& pod, const PodLimits& limits) {
  if (absl::Status s = ValidateName("name", pod.name, /*required=*/true, limits); !s.ok()) return s;
  if (absl::Status s = ValidateName("namespace", pod.ns, /*required=*/true, limits); !s.ok()) {
    return s;
  }
  if (!pod.ip.empty() && !IsIpLiteral(pod.ip)) {
    return Invalid("ip", absl::StrCat("\"", pod.ip.substr(0, 64), "\" is not an IPv4/IPv6 literal"));
  }
  if (pod.dp_size > limits.max_dp_size) {
    return Invalid("dp_size", absl::StrCat(pod.dp_size, " exceeds ", limits.max_dp_size));
  }
  const uint32_t dp_size = pod.dp_size == 0 ? 1 : pod.dp_size;
  const uint32_t events_port = pod.events_port == 0 ? kDefaultEventsPort : pod.events_port;
  if (absl::Status s = ValidatePortRange("events_port", events_port, dp_size); !s.ok()) return s;
  const uint32_t replay_port = pod.replay_port.value_or(kDefaultReplayPort);
  if (replay_port != 0) {
    if (absl::Status s = ValidatePortRange("replay_port", replay_port, dp_size); !s.ok()) return s;
  }
  if (pod.labels.size() + pod.annotations.size() > limits.max_labels) {
    return Invalid("labels", absl::StrCat(pod.labels.size() + pod.annotations.size(),
                                          " labels and annotations, limit ", limits.max_labels));
  }
  if (absl::Status s = ValidateMap("labels", pod.labels, limits); !s.ok()) return s;
  if (absl::Status s = ValidateMap("annotations", pod.annotations, limits); !s.ok()) return s;
  if (absl::Status s = ValidateString("model", pod.model, limits); !s.ok()) return s;
  if (absl::Status s = ValidateString("lora_name", pod.lora_name, limits); !s.ok()) return s;
  if (absl::Status s = ValidateString("phase", pod.phase, limits); !s.ok()) return s;
  return ValidateString("topic", pod.topic, limits);
}

PodPlan PlanPod(const Pod& pod) {
  PodPlan plan;
  plan.events_port = pod.events_port == 0 ? kDefaultEventsPort : pod.events_port;
  const uint32_t replay_port = pod.replay_port.value_or(kDefaultReplayPort);
  if (replay_port != 0) plan.replay_port = replay_port;
  plan.dp_size = pod.dp_size == 0 ? 1 : pod.dp_size;
  plan.engine_connects = pod.engine_connects.value_or(false);

  if (!pod.model.empty()) {
    plan.model = pod.model;
  } else if (auto it = pod.labels.find(kModelNameKey); it != pod.labels.end() && !it->second.empty()) {
    plan.model = it->second;
  } else if (auto it = pod.annotations.find(kModelNameKey); it != pod.annotations.end()) {
    plan.model = it->second;
  }
  if (!pod.lora_name.empty()) {
    plan.default_lora = pod.lora_name;
  } else if (auto it = pod.labels.find(kLoraIdLabel); it != pod.labels.end()) {
    plan.default_lora = it->second;
  }

  bool enabled = false;
  if (pod.kv_events_enabled.has_value()) {
    enabled = *pod.kv_events_enabled;
  } else if (auto it = pod.labels.find(kKvEventsEnabledLabel); it != pod.labels.end()) {
    enabled = it->second == "true";  // exactly, as the seed compares
  }

  if (!enabled) {
    plan.reason = pod.kv_events_enabled.has_value()
                      ? "kv events disabled by the pod's kv_events_enabled field"
                      : absl::StrCat("kv events not enabled (label ", kKvEventsEnabledLabel,
                                     " is not \"true\")");
  } else if (pod.phase != "Running") {
    plan.reason = absl::StrCat("phase is \"", pod.phase, "\", not Running");
  } else if (pod.ip.empty()) {
    plan.reason = "pod has no IP";
  } else if (plan.model.empty()) {
    plan.reason = absl::StrCat("model unknown (no model field, label or annotation ", kModelNameKey,
                               ")");
  } else {
    plan.subscribable = true;
  }
  return plan;
}

}  // namespace kvindex
