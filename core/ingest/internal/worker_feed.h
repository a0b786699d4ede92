#pragma once

// WorkerFeed: the ordered ingestion of one worker's (pod, dp rank) numbered
// batches, independent of sockets. It decides, for every batch coming from the
// live stream or from a replay, whether to apply, skip, ask for a replay, or
// clear the worker, and keeps the worker's counters.
//
// Rules (see ../shared/wire/README.md):
//  - Start() asks for replay from 0 (when there is a replay endpoint) so a new
//    subscription starts warm. If no reply at all comes, the worker goes on
//    from its next live batch, and the warm start is asked again, with a
//    growing jittered pause, up to FeedOptions::warm_start_retries times while
//    its history is incomplete. A retry's replay rebuilds the worker from the
//    engine's buffer: when its first batch is at or before the first one the
//    live stream gave, the worker is cleared and every batch applied again
//    (counted again); when it is after, the replay goes on from the blocks
//    held; one that ends before the batch applied last means the engine
//    restarted (cleared, replayed from 0).
//    A worker restored from a snapshot
//    (FeedOptions::resume) starts as if it had just applied the saved seq:
//    replay from seq + 1, and a live seq at or below it is an engine restart
//    (the engine had published past it when the snapshot was taken).
//  - The catch-up (FeedOptions::catch_up_after): when that first replay ends
//    with no live batch held and none comes within catch_up_after, the feed
//    asks once more from the batch applied last, a replay that continues the
//    stream (below): what the engine published while the live subscription
//    was still reaching it is applied, not left until its next batch.
//  - Live seq <= last applied: duplicate or old, skipped. Live seq going
//    backwards relative to the previous *live* seq: engine restart: the worker
//    is cleared, then the batch is handled as the first of a new stream.
//  - Live seq > last + 1: a gap: ask replay from last + 1 and hold live batches
//    (bounded) until the replay ends, then apply them in order, skipping those
//    the replay already applied.
//  - A replay that continues a stream (after a gap, or for a worker restored
//    from a snapshot) asks from the last applied seq itself, not + 1, and
//    compares the batch it gets for that seq with the digest recorded when it
//    was applied: a different batch, or an empty replay (the engine's buffer
//    always holds its latest batch), means the engine restarted (and may have
//    published past the old seq meanwhile): the worker is cleared and replayed
//    from 0. When the buffer no longer holds that batch but holds the next,
//    the check cannot be made and the stream goes on.
//  - A replay times out when nothing comes on the replay socket for
//    replay_timeout (each replayed batch restarts the clock: a long replay
//    that is progressing is not cut).
//  - The replay cannot cover the gap (its first seq is above the one asked,
//    it times out, no replay endpoint, or it ends before
//    the live batch that revealed the gap): the worker is cleared, counted in
//    uncovered_gaps, and the stream goes on from there.
//  - An undecodable payload is counted and its seq consumed (a replay would
//    return the same bytes).
//  - The worker's history is incomplete (WorkerStatus::history_complete)
//    when a stream's first batch is not seq 0 or an uncovered gap cleared it,
//    until a stream is seen from seq 0 or an AllBlocksCleared is applied.
// Data flows one way: the owner's sockets -> this sequencing -> decode ->
// BlockWriter (the index) -> the status and the IngestMetrics; what the index
// could not apply (ApplyResult) is counted in both. Requests for the replay
// socket go out as ReplayOps, never as calls back into the owner.
//
// Thread safety: none; owned and called by one I/O thread.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/events/event_batch.h"
#include "core/index/worker_snapshot.h"
#include "core/ingest/internal/block_writer.h"
#include "core/ingest/ingest_metrics.h"
#include "core/ingest/worker_status.h"

namespace kvindex {

// Work on the replay socket that a WorkerFeed asks of its owner. The feed never
// touches sockets: it queues these, and its owner takes them (TakeReplayOps)
// after each call, outside any socket read, carries them out in order, and
// reports a request it could not send (OnReplayRequestFailed).
struct ReplayOp {
  enum class Kind {
    kRequest,  // send a replay request for batches >= from_seq
    kReset,    // a replay was abandoned: drop whatever late replies may still
               // come (e.g. reconnect the replay socket)
  };
  Kind kind = Kind::kRequest;
  uint64_t from_seq = 0;

  bool operator==(const ReplayOp&) const = default;
};

struct FeedOptions {
  bool has_replay = false;
  absl::Duration replay_timeout = absl::Seconds(2);
  size_t max_backlog = 100000;  // live batches held during a replay
  // A warm start that got no reply is asked again this many times, the first
  // after replay_timeout, each pause twice the last, each up to half longer
  // (jitter, so workers that timed out together do not ask together again).
  int warm_start_retries = 5;
  // Read after a live batch is applied, for its lag (ts -> visible in Match).
  absl::Time (*clock)() = &absl::Now;
  // A worker restored from a snapshot: the last batch its blocks include, and
  // its history_complete then. nullopt: a new worker, replayed from 0.
  std::optional<BatchCursor> resume;
  // When the replay Start() asks for ends with no live batch held, the feed
  // asks once more this long after, from the batch applied last (the catch-up),
  // unless a live batch comes first: batches the engine published after
  // answering but before the live subscription reached it (ZeroMQ's slow
  // joiner) would otherwise wait for its next batch to show as a gap.
  // InfiniteDuration: never.
  absl::Duration catch_up_after = absl::InfiniteDuration();
};

class WorkerFeed {
 public:
  // `writer` and `metrics` must outlive the feed; null `metrics`: NoIngestMetrics().
  WorkerFeed(BlockWriter* writer, FeedOptions options, uint32_t dp_rank, IngestMetrics* metrics = nullptr);

  // Asks for replay from 0 when there is a replay endpoint.
  void Start(absl::Time now);

  // The replay socket work asked since the last call, oldest first.
  [[nodiscard]] std::vector<ReplayOp> TakeReplayOps();
  // A kRequest op could not be sent: the replay it asked for fails now.
  void OnReplayRequestFailed(absl::Time now);
  // The owner holds a kRequest op back (e.g. waiting for a replay slot): the
  // replay's clock stops until OnReplayRequestSent, which restarts it from `now`.
  void OnReplayRequestQueued();
  void OnReplayRequestSent(absl::Time now);

  // A live batch [seq, payload].
  void OnLive(uint64_t seq, std::string_view payload, absl::Time now);
  // One replayed batch.
  void OnReplayBatch(uint64_t seq, std::string_view payload, absl::Time now);
  // The replay end marker.
  void OnReplayEnd(absl::Time now);
  // A malformed message on either socket.
  void OnBadFrame();
  // The engine was heard from outside a batch, e.g. a replay reply (true),
  // or is known lost (false): "live" rather than "connecting" without traffic.
  void OnConnected(bool connected);

  // When OnTimer must run (a replay timeout, a warm-start retry or the
  // catch-up); InfiniteFuture when none.
  absl::Time Deadline() const;
  void OnTimer(absl::Time now);

  bool replaying() const { return replay_.has_value(); }
  // The engine has answered a replay or published a live batch since the feed began.
  bool engine_heard() const { return heard_; }
  const WorkerStatus& status() const { return status_; }

 private:
  struct Replay {
    uint64_t from = 0;
    int64_t target = -1;  // live seq that revealed the gap; -1: none (first subscribe)
    absl::Time deadline;
    // Asked from 0 for a stream with no history yet: a buffer that no longer
    // holds seq 0 is no loss.
    bool warm_start = false;
    // A warm-start retry of a worker holding live batches: rebuilt from the
    // engine's buffer (see the rules above).
    bool rebuild = false;
    int64_t last_seen = -1;  // highest seq replayed; -1: none yet
    bool got_any() const { return last_seen >= 0; }
    bool failed = false;  // the gap was found uncoverable while replaying
    // Asked from the last applied seq (`from`), whose batch must have this digest.
    std::optional<uint64_t> verify_digest;
    bool initial = false;  // the replay Start() asked for
  };

  // Handles a live batch outside a replay; may start one.
  void Process(uint64_t seq, std::string_view payload, absl::Time now);
  // `live`: from the live stream (its lag is reported), not from a replay.
  void Apply(uint64_t seq, std::string_view payload, bool live);
  void StartReplay(uint64_t from, int64_t target, absl::Time now);
  // Asks for the warm start again (a retry): replay from 0, rebuilding the worker.
  void RetryWarmStart(absl::Time now);
  // The warm start got no reply: schedules its next retry, if any is left.
  void ScheduleWarmStartRetry(absl::Time now);
  void FinishReplay(bool timed_out, absl::Time now);
  // The replay showed the engine restarted: clears the worker and replays from 0.
  void RestartFromZero(absl::Time now);
  // The engine restarted: counted, the worker cleared, its stream starts over.
  void ForgetEngine();
  // Clears the worker after an uncoverable gap.
  void ClearUncovered();
  void UpdateState();

  BlockWriter* const writer_;
  const FeedOptions options_;
  IngestMetrics& metrics_;

  int64_t last_applied_ = -1;  // -1: nothing yet (or since a restart)
  int64_t live_last_ = -1;     // last seq consumed from the live stream
  int64_t first_applied_ = -1;  // first seq applied since the worker was last cleared; -1: none yet
  std::optional<uint64_t> last_digest_;  // BatchDigest of the batch last_applied_ names
  bool replay_reachable_ = true;  // false after a replay timed out, until one answers
  bool connected_ = false;
  bool heard_ = false;  // engine_heard()
  std::optional<Replay> replay_;
  int warm_start_retries_ = 0;  // retries done
  absl::Time warm_start_retry_at_ = absl::InfiniteFuture();
  absl::Time catch_up_at_ = absl::InfiniteFuture();  // FeedOptions::catch_up_after
  std::deque<std::pair<uint64_t, std::string>> backlog_;  // live batches held during a replay
  std::vector<ReplayOp> replay_ops_;                      // not yet taken by the owner
  WorkerStatus status_;
};

}  // namespace kvindex
