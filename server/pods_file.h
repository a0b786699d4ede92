#pragma once

// --pods_file: a kvindex.v1.PodSnapshot in protobuf text format, applied at
// start so that kvindex-server can run without a control plane. Example:
//
//   pods {
//     namespace: "default" name: "vllm-0" ip: "10.0.0.7" phase: "Running"
//     labels { key: "model.aibrix.ai/name" value: "llama-3-8b" }
//     labels { key: "model.aibrix.ai/kv-events-enabled" value: "true" }
//   }

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "core/ingest/pod.h"

namespace kvindex::server {

// The pods of a text-format PodSnapshot. INVALID_ARGUMENT with the parser's
// line:column message when the text does not parse.
[[nodiscard]] absl::StatusOr<std::vector<Pod>> ParsePodSnapshotText(absl::string_view text);

// ParsePodSnapshotText of the file at `path`; NOT_FOUND when unreadable.
[[nodiscard]] absl::StatusOr<std::vector<Pod>> LoadPodsFile(const std::string& path);

}  // namespace kvindex::server
