#pragma once

// WorkerResume: where a worker restored from a snapshot picks its engine's
// stream up again. The SubscriptionManager (ManagerOptions::resume) hands it
// to the worker's first subscription when the pod it is subscribed under is
// the same engine as the one it was saved under (same subscription identity:
// IP, ports, model, LoRA, topic, dp size); the feed then asks replay from
// cursor.seq + 1 instead of 0 and keeps the saved history_complete.
//
// Plain value; thread-compatible.

#include "core/index/worker_key.h"
#include "core/index/worker_snapshot.h"
#include "core/ingest/pod.h"

namespace kvindex {

struct WorkerResume {
  WorkerKey worker;
  Pod pod;             // the pod as it was when the worker's blocks were saved
  BatchCursor cursor;  // the last batch those blocks include
};

}  // namespace kvindex
