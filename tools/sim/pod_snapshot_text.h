#pragma once

// The simulated pods as a kvindex.v1.PodSnapshot in protobuf text format, for
// `kvindex pods apply -f` and --pods_file. Written by hand so that the
// simulator does not depend on the generated protobuf code; field names follow
// proto/kvindex/v1/kvindex.proto.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/types/span.h"

namespace kvindex::sim {

struct SimPod {
  std::string ns;
  std::string name;
  std::string ip;
  std::string model;
  std::string lora_name;                // "" : not written
  uint32_t events_port = 0;             // dp rank 0's
  std::optional<uint32_t> replay_port;  // nullopt: written as 0 (no replay socket)
  uint32_t dp_size = 1;                 // written when > 1
  std::string topic;                    // "" : not written
};

// `pods { ... }` per pod: namespace, name, ip, phase "Running", the labels
// model.aibrix.ai/name and model.aibrix.ai/kv-events-enabled "true", model,
// events_port, replay_port, and lora_name / dp_size / topic when set.
std::string PodSnapshotText(absl::Span<const SimPod> pods);

}  // namespace kvindex::sim
