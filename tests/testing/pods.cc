#include "tests/testing/pods.h"

#include "absl/strings/str_cat.h"

namespace kvindex::testutil {

v1::Pod PendingPod(const std::string& ns, const std::string& name) {
  v1::Pod pod;
  pod.set_namespace_(ns);
  pod.set_name(name);
  pod.set_ip("127.0.0.1");
  pod.set_phase("Pending");
  return pod;
}

v1::Pod EnginePod(const std::string& ns, const std::string& name, const std::string& model, uint32_t events_port,
                  KvEventsSwitch kv_events) {
  v1::Pod pod;
  pod.set_namespace_(ns);
  pod.set_name(name);
  pod.set_ip("127.0.0.1");
  pod.set_phase("Running");
  pod.set_model(model);
  if (kv_events == KvEventsSwitch::kField) {
    pod.set_kv_events_enabled(true);
  } else {
    (*pod.mutable_labels())["model.aibrix.ai/kv-events-enabled"] = "true";
  }
  pod.set_events_port(events_port);
  pod.set_replay_port(0);
  return pod;
}

std::string PodKey(const v1::Pod& pod) { return absl::StrCat(pod.namespace_(), "/", pod.name()); }

v1::PodUpdate Upsert(const v1::Pod& pod) {
  v1::PodUpdate update;
  *update.mutable_upsert() = pod;
  return update;
}

v1::PodUpdate Delete(const std::string& key) {
  v1::PodUpdate update;
  update.set_delete_(key);
  return update;
}

v1::PodUpdate SnapshotUpdate(const v1::PodSnapshot& pods) {
  v1::PodUpdate update;
  *update.mutable_snapshot() = pods;
  return update;
}

}  // namespace kvindex::testutil
