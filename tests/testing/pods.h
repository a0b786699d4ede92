#pragma once

// Test pods as the control plane sends them (kvindex.v1.Pod), all on
// 127.0.0.1, and the PodUpdates that carry them over SyncPods.

#include <cstdint>
#include <string>

#include "kvindex/v1/kvindex.pb.h"

namespace kvindex::testutil {

// A pod the server records but never subscribes to: phase Pending, no model,
// no ports, no labels.
v1::Pod PendingPod(const std::string& ns, const std::string& name);

// How an EnginePod says that it publishes KV events.
enum class KvEventsSwitch {
  kField,  // the kv_events_enabled field (the control plane's override)
  kLabel,  // the model.aibrix.ai/kv-events-enabled=true label, as on a Kubernetes pod
};

// A pod the server subscribes to: phase Running, serving `model`, KV events
// enabled (by `kv_events`), published on 127.0.0.1:`events_port`, no replay
// endpoint. Nothing need listen on the port: SyncPods does not wait for it.
v1::Pod EnginePod(const std::string& ns, const std::string& name, const std::string& model, uint32_t events_port,
                  KvEventsSwitch kv_events = KvEventsSwitch::kField);

// "namespace/name", the key ListPods, acks and deletes use.
std::string PodKey(const v1::Pod& pod);

// A PodUpdate upserting `pod`.
v1::PodUpdate Upsert(const v1::Pod& pod);
// A PodUpdate deleting the pod "namespace/name".
v1::PodUpdate Delete(const std::string& key);
// A PodUpdate carrying `pods` as a snapshot.
v1::PodUpdate SnapshotUpdate(const v1::PodSnapshot& pods);

}  // namespace kvindex::testutil
