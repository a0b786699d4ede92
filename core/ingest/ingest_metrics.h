#pragma once

// IngestMetrics: what the ingestion of engine events reports, as it happens,
// for metrics. WorkerFeed calls it (through the Subscriber, from
// ManagerOptions::metrics); KvIndexMetrics implements it; tests pass fakes.
// Every call is one occurrence, so what an implementation counts is monotonic
// whatever happens to the pods later.
//
// Thread safety: implementations must accept calls from every I/O thread at
// once; calls must be cheap (they run once per batch).

#include <optional>

#include "absl/time/time.h"
#include "core/events/event_batch.h"
#include "core/events/event_decoder.h"
#include "core/index/prefix_index.h"

namespace kvindex {

// One occurrence of something a worker's feed counts (see WorkerStatus).
enum class FeedEvent {
  kBadFrame,          // a message not shaped [topic, seq8, payload] (or a replay reply form)
  kDuplicateBatch,    // a batch whose seq was already applied, skipped
  kDroppedBatch,      // a live batch dropped because the replay backlog was full
  kSeqGap,            // a live seq jump (seq > last + 1)
  kUncoveredGap,      // a gap no replay could cover: the worker was cleared
  kEngineRestart,     // the live seq went backwards: the worker was cleared
  kReplayOk,          // a replay covered what was asked
  kReplayTimeout,     // a replay got no end marker in time (or could not be sent)
  kReplayIncomplete,  // a replay ended without covering what was asked
};
inline constexpr int kFeedEventCount = 9;

class IngestMetrics {
 public:
  virtual ~IngestMetrics() = default;

  // `batch` was decoded and applied to the index, which could not apply what
  // `applied` counts. `lag`: the time after the apply (the batch visible in
  // Match) minus the batch's engine timestamp, for batches of the live stream;
  // nullopt for replayed ones.
  virtual void OnBatchApplied(const EventBatch& batch, const ApplyResult& applied,
                              std::optional<absl::Duration> lag) = 0;
  // A payload did not decode; its seq was consumed.
  virtual void OnDecodeError(DecodeErrorReason reason) = 0;
  virtual void OnFeedEvent(FeedEvent event) = 0;
};

// An IngestMetrics that ignores everything; the default where none is given.
IngestMetrics& NoIngestMetrics();

}  // namespace kvindex
