#include "tools/sim/pod_snapshot_text.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kvindex::sim {
namespace {

std::string Quoted(const std::string& s) { return absl::StrCat("\"", absl::CEscape(s), "\""); }

}  // namespace

std::string PodSnapshotText(absl::Span<const SimPod> pods) {
  std::string out = "# kvindex.v1.PodSnapshot (protobuf text format), written by kvindex-sim\n";
  for (const SimPod& p : pods) {
    absl::StrAppend(&out, "pods {\n");
    absl::StrAppend(&out, "  namespace: ", Quoted(p.ns), "\n");
    absl::StrAppend(&out, "  name: ", Quoted(p.name), "\n");
    absl::StrAppend(&out, "  ip: ", Quoted(p.ip), "\n");
    absl::StrAppend(&out, "  phase: \"Running\"\n");
    absl::StrAppend(&out, "  labels { key: \"model.aibrix.ai/name\" value: ", Quoted(p.model), " }\n");
    absl::StrAppend(&out, "  labels { key: \"model.aibrix.ai/kv-events-enabled\" value: \"true\" }\n");
    absl::StrAppend(&out, "  model: ", Quoted(p.model), "\n");
    if (!p.lora_name.empty()) absl::StrAppend(&out, "  lora_name: ", Quoted(p.lora_name), "\n");
    absl::StrAppend(&out, "  events_port: ", p.events_port, "\n");
    absl::StrAppend(&out, "  replay_port: ", p.replay_port.value_or(0), "\n");
    if (p.dp_size > 1) absl::StrAppend(&out, "  dp_size: ", p.dp_size, "\n");
    if (!p.topic.empty()) absl::StrAppend(&out, "  topic: ", Quoted(p.topic), "\n");
    absl::StrAppend(&out, "}\n");
  }
  return out;
}

}  // namespace kvindex::sim
