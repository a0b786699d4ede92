#pragma once

// What kvindex-server refuses of a pod before the SubscriptionManager sees it,
// on top of ValidatePod (core/ingest/pod.h): a pod with a name but no namespace
// (its key would be "/name"), rejected like a pod without a name. SyncPods and
// --pods_file both go through here.
//
// Thread safety: as the SubscriptionManager's own calls.

#include <vector>

#include "absl/status/status.h"
#include "core/ingest/pod.h"
#include "core/ingest/subscription_manager.h"

namespace kvindex::server {

// OK, or INVALID_ARGUMENT "namespace: required" for a named pod without one.
// A pod without a name passes: ValidatePod rejects it ("name: required").
[[nodiscard]] absl::Status CheckPodNamespace(const Pod& pod);

// SubscriptionManager::Upsert, or a kRejected ack when CheckPodNamespace fails.
PodAck AdmitUpsert(SubscriptionManager& manager, const Pod& pod);

// SubscriptionManager::ApplySnapshot of the pods that pass CheckPodNamespace;
// acks as ApplySnapshot's (one per given pod, in order, then the removed
// ones), a refused pod's kRejected ack in its place.
std::vector<PodAck> AdmitSnapshot(SubscriptionManager& manager, const std::vector<Pod>& pods);

}  // namespace kvindex::server
