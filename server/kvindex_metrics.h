#pragma once

// KvIndexMetrics: every metric kvindex-server exports, declared in one sorted
// list (KVINDEX_METRICS, in the manner of Envoy's stats macros) and registered
// at construction, so each family is rendered from the first scrape on.
//  - Counters are updated as things happen: ingestion through IngestMetrics
//    (events, batches, decode errors, gaps, replays, restarts, lag), Match
//    through OnMatch. They never go down, whatever happens to pods later.
//  - Gauges of current state (workers by state, index blocks, entries per
//    medium, memory) are pulled from the PrefixIndex and SubscriptionManager
//    at scrape time.
//
// Thread safety: every call may be made from any thread.

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ingest/ingest_metrics.h"
#include "core/snapshot/index_snapshot.h"
#include "server/bootstrap_outcome.h"
#include "server/metrics_registry.h"

namespace kvindex {

class PrefixIndex;
class SubscriptionManager;

// Upper bounds, seconds.
inline constexpr double kMatchLatencyBounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                 0.01,    0.025,  0.05,    0.1,    0.25,  1};
inline constexpr double kSpeculativeConfirmBounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
inline constexpr double kSnapshotWriteBounds[] = {0.001, 0.01, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
inline constexpr double kEventLagBounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};

// Every metric, sorted by name:
//   COUNTER(member, name, label, help) / GAUGE(member, name, label, help) /
//   HISTOGRAM(member, name, label, bounds, help); label "" means none.
// clang-format off
#define KVINDEX_METRICS(COUNTER, GAUGE, HISTOGRAM)                                                              \
  COUNTER(apply_skips, "kvindex_apply_skips_total", "reason",                                                  \
          "What applying decoded events could not do, skipped: unknown_removal (a removed block the worker "      \
          "did not hold), unindexed_block (a stored block whose parent was unknown), unknown_chunk (an "          \
          "offloaded chunk naming a block the worker did not hold)")                                             \
  COUNTER(bad_events, "kvindex_bad_events_total", "reason",                                                    \
          "Known events that did not decode, by reason; skipped, the rest of their batch applied")             \
  COUNTER(bad_frames, "kvindex_bad_frames_total", "",                                                          \
          "Engine messages not shaped [topic, seq, payload] (or a replay reply form); skipped")               \
  COUNTER(batches, "kvindex_batches_total", "", "Event batches (engine messages) applied to the index")        \
  GAUGE(bootstrap_bytes, "kvindex_bootstrap_bytes", "",                                                        \
        "Bytes of index received by the bootstrap from a peer at start (--bootstrap_from), loaded or not")     \
  COUNTER(bootstraps, "kvindex_bootstrap_total", "outcome",                                                    \
          "Bootstraps from a peer at start by outcome: loaded, unreachable, unauthenticated, deadline, "       \
          "refused, failed (anything but loaded: the snapshot, if any, or a cold start)")                       \
  COUNTER(decode_errors, "kvindex_decode_errors_total", "reason",                                              \
          "Payloads that did not decode, by reason; skipped, the subscription stays up")                       \
  COUNTER(dropped_batches, "kvindex_dropped_batches_total", "",                                                \
          "Live batches dropped because a worker's replay backlog was full")                                   \
  COUNTER(duplicate_batches, "kvindex_duplicate_batches_total", "",                                            \
          "Batches skipped because their seq was already applied")                                             \
  COUNTER(engine_restarts, "kvindex_engine_restarts_total", "",                                                \
          "Engine restarts seen (live seq went backwards); the worker's blocks were cleared")                  \
  HISTOGRAM(event_lag, "kvindex_event_lag_seconds", "", kEventLagBounds,                                       \
            "Time from an engine's batch timestamp to its application, for live batches")                      \
  COUNTER(events, "kvindex_events_total", "type", "Engine events applied, by type")                            \
  GAUGE(incomplete_workers, "kvindex_incomplete_workers", "",                                                  \
        "Workers whose history is incomplete: the index may lack blocks the engine stored before kvindex "     \
        "followed it")                                                                                         \
  GAUGE(index_blocks, "kvindex_index_blocks", "", "Distinct blocks (index hashes) held by at least one worker") \
  GAUGE(index_entries, "kvindex_index_entries", "", "(block, worker) entries in the index")                    \
  COUNTER(index_evictions, "kvindex_index_evictions_total", "",                                                \
          "Entries evicted by the per-worker or the global cap")                                               \
  COUNTER(index_exports, "kvindex_index_exports_total", "result",                                              \
          "ExportIndex calls served to bootstrapping peers, by result: ok, failed")                            \
  GAUGE(index_medium_entries, "kvindex_index_medium_entries", "medium",                                        \
        "(block, worker) entries by medium; a block a worker holds on GPU and CPU counts in both")             \
  GAUGE(index_memory, "kvindex_index_memory_bytes", "", "Bytes allocated by the index's tables")               \
  COUNTER(index_unresolved_parents, "kvindex_index_unresolved_parents_total", "",                              \
          "BlockStored events whose parent the worker did not hold (not indexed)")                             \
  HISTOGRAM(match_latency, "kvindex_match_latency_seconds", "", kMatchLatencyBounds,                           \
            "Time to answer a Match call, every status code")                                                  \
  COUNTER(match_requests, "kvindex_match_requests_total", "code", "Match calls by gRPC status code")           \
  GAUGE(pods, "kvindex_pods", "subscribed", "Known pods, subscribed or not")                                   \
  COUNTER(replays, "kvindex_replays_total", "result", "Replay requests by result: ok, timeout, incomplete")    \
  COUNTER(seq_gaps, "kvindex_seq_gaps_total", "", "Seq jumps in engines' live streams (a replay is asked)")     \
  GAUGE(snapshot_age, "kvindex_snapshot_age_seconds", "",                                                      \
        "Age of the last snapshot written or loaded (--snapshot_dir); -1 before any")                          \
  GAUGE(snapshot_bytes, "kvindex_snapshot_bytes", "", "Size of the last snapshot written or loaded")           \
  COUNTER(snapshot_loads, "kvindex_snapshot_loads_total", "outcome",                                           \
          "Snapshot loads at start by outcome: loaded, none, unreadable, corrupt, version, hashing (refused: "   \
          "the server started cold)")                                                                          \
  GAUGE(snapshot_pause, "kvindex_snapshot_pause_seconds", "",                                                  \
        "Longest single hold of a worker's lock by the last snapshot's copy (bounded steps)")                  \
  HISTOGRAM(snapshot_write_duration, "kvindex_snapshot_write_seconds", "", kSnapshotWriteBounds,              \
            "Time to write a snapshot, fsyncs included")                                                       \
  COUNTER(snapshot_writes, "kvindex_snapshot_writes_total", "result", "Snapshot writes by result: ok, failed") \
  HISTOGRAM(speculative_confirm, "kvindex_speculative_confirm_seconds", "", kSpeculativeConfirmBounds,         \
            "Time from a RecordRouting to the engine's BlockStored confirming its entry, applied")             \
  GAUGE(speculative_entries, "kvindex_speculative_entries", "",                                                \
        "Speculative entries (RecordRouting) held, not yet confirmed, expired or dropped")                     \
  COUNTER(speculative, "kvindex_speculative_total", "outcome",                                                 \
          "Speculative entries that ended, by outcome: confirmed (the engine stored the block), expired (TTL), " \
          "dropped (removed, cleared, restarted, pod gone, or evicted by --max_speculative_entries)")          \
  COUNTER(uncovered_gaps, "kvindex_uncovered_gaps_total", "",                                                  \
          "Gaps no replay could cover; the worker's blocks were cleared")                                      \
  GAUGE(workers, "kvindex_workers", "state", "Subscribed (pod, dp rank) workers by state")                     \
  GAUGE(process_resident_memory, "process_resident_memory_bytes", "", "Resident memory of the process")
// clang-format on

class KvIndexMetrics final : public IngestMetrics {
 public:
  // Registers every metric of KVINDEX_METRICS and its known label values.
  KvIndexMetrics();
  KvIndexMetrics(const KvIndexMetrics&) = delete;
  KvIndexMetrics& operator=(const KvIndexMetrics&) = delete;

  // Where scrape-time gauges come from; either may be null (not reported).
  // Both must outlive every later Render() (or be unset first).
  void SetSources(const PrefixIndex* index, const SubscriptionManager* pods) ABSL_LOCKS_EXCLUDED(mu_);

  // One Match call answered with `code` after `latency`.
  void OnMatch(absl::StatusCode code, absl::Duration latency);

  // One speculative entry confirmed `latency` after its RecordRouting
  // (SpeculativeOptions::on_confirm).
  void OnSpeculativeConfirm(absl::Duration latency);

  // IngestMetrics.
  void OnBatchApplied(const EventBatch& batch, const ApplyResult& applied,
                      std::optional<absl::Duration> lag) override;
  void OnDecodeError(DecodeErrorReason reason) override;
  void OnFeedEvent(FeedEvent event) override;

  // Snapshots (server/snapshot_keeper.h): the load at start, and each write.
  void OnSnapshotLoad(const SnapshotLoad& load);
  void OnSnapshotWrite(const absl::StatusOr<SnapshotWriteStats>& write);
  // Bootstraps from a peer (server/peer_bootstrap.h): the one at start, with
  // the body bytes received; and each ExportIndex served.
  void OnBootstrap(server::BootstrapOutcome outcome, uint64_t bytes);
  void OnIndexExport(bool ok);

  // Every metric in the Prometheus text format, scrape-time gauges refreshed.
  std::string Render() const { return registry_.Render(); }

  MetricsRegistry& registry() { return registry_; }

 private:
  // Refreshes the scrape-time gauges (a registry collector).
  void Collect() ABSL_LOCKS_EXCLUDED(mu_);

  MetricsRegistry registry_;
  struct Families {
#define KVINDEX_COUNTER_MEMBER(member, name, label, help) CounterFamily* member = nullptr;
#define KVINDEX_GAUGE_MEMBER(member, name, label, help) GaugeFamily* member = nullptr;
#define KVINDEX_HISTOGRAM_MEMBER(member, name, label, bounds, help) HistogramFamily* member = nullptr;
    KVINDEX_METRICS(KVINDEX_COUNTER_MEMBER, KVINDEX_GAUGE_MEMBER, KVINDEX_HISTOGRAM_MEMBER)
#undef KVINDEX_COUNTER_MEMBER
#undef KVINDEX_GAUGE_MEMBER
#undef KVINDEX_HISTOGRAM_MEMBER
  } families_;

  // Children resolved at construction: the hot paths only touch atomics.
  std::array<Counter*, 4> events_by_type_{};  // stored, removed, cleared, unknown
  std::array<Counter*, kNumDecodeErrorReasons> decode_errors_by_reason_{};
  std::array<Counter*, kNumDecodeErrorReasons> bad_events_by_reason_{};
  std::array<Counter*, kFeedEventCount> feed_events_{};
  std::array<Counter*, 17> match_by_code_{};  // absl::StatusCode 0..16 (the gRPC codes)
  Counter* batches_ = nullptr;
  Counter* unknown_removals_ = nullptr;  // apply_skips children
  Counter* unindexed_blocks_ = nullptr;
  Counter* unknown_chunks_ = nullptr;
  Histogram* event_lag_ = nullptr;
  Histogram* match_latency_ = nullptr;
  // Creation time of the last snapshot written or loaded, Unix microseconds; 0: none.
  std::atomic<int64_t> snapshot_created_us_{0};

  mutable absl::Mutex mu_;
  const PrefixIndex* index_ ABSL_GUARDED_BY(mu_) = nullptr;
  const SubscriptionManager* pods_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace kvindex
