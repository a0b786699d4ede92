#pragma once

// PostSubscription: how a pod arrives — restored blocks that are not its
// engine's dropped, then one WorkerSubscription per dp rank created and added
// to the pod's I/O thread (and routed by the bind receiver in bind mode). The
// counterpart of PostRemoval (pod_removal.h).
//
// Thread safety: PostSubscription may be called from any thread; the work runs
// on `thread`.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/index/prefix_index.h"
#include "core/index/worker_key.h"
#include "core/ingest/internal/bind_receiver.h"
#include "core/ingest/internal/completion.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/internal/worker_subscription.h"
#include "core/ingest/worker_status.h"

namespace kvindex {

// One pod's subscription, rank by rank (configs, task_ids and cells have one
// entry per dp rank).
struct PodSubscription {
  std::vector<SubscriberConfig> configs;
  std::vector<uint64_t> task_ids;
  std::vector<std::shared_ptr<WorkerStatusCell>> cells;
  std::vector<WorkerKey> stale;  // restored workers whose blocks are not this engine's: dropped first
  PrefixIndex* index = nullptr;
  BindReceiver* receiver = nullptr;  // bind mode: routes the pod's topics; null otherwise
  std::string ip;                    // for the routes
  uint32_t events_port = 0;
  std::string model;
};

// Posts the subscription's creation. The completion finishes OK when every
// rank was set up, else with the (first) error; the ranks that could be set up
// are followed either way. `factory` must outlive the thread.
std::shared_ptr<Completion> PostSubscription(IoThread& thread, PodSubscription subscription,
                                             SubscriptionFactory& factory);

}  // namespace kvindex
