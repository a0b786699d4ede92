#include "server/kvindex_metrics.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/time/clock.h"
#include "core/index/prefix_index.h"
#include "core/ingest/subscription_manager.h"
#include "core/util/resident_memory.h"

namespace kvindex {
namespace {

constexpr DecodeErrorReason kDecodeReasons[] = {
    DecodeErrorReason::kTruncated, DecodeErrorReason::kTrailingBytes, DecodeErrorReason::kWrongType,
    DecodeErrorReason::kBadTokenCount, DecodeErrorReason::kTooLarge, DecodeErrorReason::kMalformed,
    DecodeErrorReason::kBadValue};
static_assert(std::size(kDecodeReasons) == kNumDecodeErrorReasons);

constexpr WorkerState kWorkerStates[] = {WorkerState::kConnecting, WorkerState::kLive, WorkerState::kReplaying,
                                         WorkerState::kFailed};

}  // namespace

KvIndexMetrics::KvIndexMetrics() {
  auto labels = [](std::string_view label) {
    return label.empty() ? std::vector<std::string>{} : std::vector<std::string>{std::string(label)};
  };
#define KVINDEX_ADD_COUNTER(member, name, label, help) \
  families_.member = &registry_.AddCounter(name, help, labels(label));
#define KVINDEX_ADD_GAUGE(member, name, label, help) families_.member = &registry_.AddGauge(name, help, labels(label));
#define KVINDEX_ADD_HISTOGRAM(member, name, label, bounds, help) \
  families_.member = &registry_.AddHistogram(name, help, {std::begin(bounds), std::end(bounds)}, labels(label));
  KVINDEX_METRICS(KVINDEX_ADD_COUNTER, KVINDEX_ADD_GAUGE, KVINDEX_ADD_HISTOGRAM)
#undef KVINDEX_ADD_COUNTER
#undef KVINDEX_ADD_GAUGE
#undef KVINDEX_ADD_HISTOGRAM

  events_by_type_ = {&families_.events->Get({"block_stored"}), &families_.events->Get({"block_removed"}),
                     &families_.events->Get({"all_blocks_cleared"}), &families_.events->Get({"unknown"})};
  for (DecodeErrorReason reason : kDecodeReasons) {
    decode_errors_by_reason_[static_cast<size_t>(reason)] =
        &families_.decode_errors->Get({DecodeErrorReasonName(reason)});
    bad_events_by_reason_[static_cast<size_t>(reason)] = &families_.bad_events->Get({DecodeErrorReasonName(reason)});
  }
  auto feed = [this](FeedEvent event) -> Counter*& { return feed_events_[static_cast<size_t>(event)]; };
  feed(FeedEvent::kBadFrame) = &families_.bad_frames->Get({});
  feed(FeedEvent::kDuplicateBatch) = &families_.duplicate_batches->Get({});
  feed(FeedEvent::kDroppedBatch) = &families_.dropped_batches->Get({});
  feed(FeedEvent::kSeqGap) = &families_.seq_gaps->Get({});
  feed(FeedEvent::kUncoveredGap) = &families_.uncovered_gaps->Get({});
  feed(FeedEvent::kEngineRestart) = &families_.engine_restarts->Get({});
  feed(FeedEvent::kReplayOk) = &families_.replays->Get({"ok"});
  feed(FeedEvent::kReplayTimeout) = &families_.replays->Get({"timeout"});
  feed(FeedEvent::kReplayIncomplete) = &families_.replays->Get({"incomplete"});
  for (size_t code = 0; code < match_by_code_.size(); ++code) {
    match_by_code_[code] =
        &families_.match_requests->Get({absl::StatusCodeToString(static_cast<absl::StatusCode>(code))});
  }
  batches_ = &families_.batches->Get({});
  unknown_removals_ = &families_.apply_skips->Get({"unknown_removal"});
  unindexed_blocks_ = &families_.apply_skips->Get({"unindexed_block"});
  unknown_chunks_ = &families_.apply_skips->Get({"unknown_chunk"});
  event_lag_ = &families_.event_lag->Get({});
  match_latency_ = &families_.match_latency->Get({});
  for (WorkerState state : kWorkerStates) families_.workers->Get({WorkerStateName(state)});
  families_.pods->Get({"true"});
  families_.pods->Get({"false"});
  // The tiers every deployment has (an event without a medium means GPU; CPU is
  // vLLM's and SGLang's offload tier): at zero from the start. Others (e.g.
  // STORAGE) appear when first held.
  for (const char* medium : {"GPU", "CPU"}) families_.index_medium_entries->Get({medium});
  for (SnapshotLoadOutcome outcome : kSnapshotLoadOutcomes) {
    families_.snapshot_loads->Get({SnapshotLoadOutcomeName(outcome)});
  }
  families_.snapshot_writes->Get({"ok"});
  families_.snapshot_writes->Get({"failed"});
  families_.snapshot_age->Get({}).Set(-1);
  for (server::BootstrapOutcome outcome : server::kBootstrapOutcomes) {
    families_.bootstraps->Get({server::BootstrapOutcomeName(outcome)});
  }
  families_.bootstrap_bytes->Get({});
  families_.index_exports->Get({"ok"});
  families_.index_exports->Get({"failed"});
  for (const char* outcome : {"confirmed", "expired", "dropped"}) families_.speculative->Get({outcome});
  families_.speculative_entries->Get({});
  families_.speculative_confirm->Get({});

  registry_.AddCollector([this] { Collect(); });
}

void KvIndexMetrics::SetSources(const PrefixIndex* index, const SubscriptionManager* pods) {
  absl::MutexLock lock(&mu_);
  index_ = index;
  pods_ = pods;
}

void KvIndexMetrics::OnMatch(absl::StatusCode code, absl::Duration latency) {
  const auto c = static_cast<size_t>(code);
  if (c < match_by_code_.size()) {
    match_by_code_[c]->Increment();
  } else {
    families_.match_requests->Get({absl::StatusCodeToString(code)}).Increment();
  }
  match_latency_->Observe(absl::ToDoubleSeconds(latency));
}

void KvIndexMetrics::OnBatchApplied(const EventBatch& batch, const ApplyResult& applied,
                                    std::optional<absl::Duration> lag) {
  uint64_t stored = 0, removed = 0, cleared = 0;
  for (const Event& event : batch.events) {
    if (std::holds_alternative<BlockStored>(event)) {
      ++stored;
    } else if (std::holds_alternative<BlockRemoved>(event)) {
      ++removed;
    } else {
      ++cleared;
    }
  }
  if (stored != 0) events_by_type_[0]->Increment(stored);
  if (removed != 0) events_by_type_[1]->Increment(removed);
  if (cleared != 0) events_by_type_[2]->Increment(cleared);
  if (batch.skipped_events != 0) events_by_type_[3]->Increment(batch.skipped_events);
  for (size_t r = 0; r < batch.bad_events_by_reason.size(); ++r) {
    if (batch.bad_events_by_reason[r] != 0) bad_events_by_reason_[r]->Increment(batch.bad_events_by_reason[r]);
  }
  batches_->Increment();
  if (applied.unknown_removals != 0) unknown_removals_->Increment(applied.unknown_removals);
  if (applied.blocks_unindexed != 0) unindexed_blocks_->Increment(applied.blocks_unindexed);
  if (applied.unknown_chunks != 0) unknown_chunks_->Increment(applied.unknown_chunks);
  // A clock behind the engine's is no negative lag: it lands in the first bucket.
  // An absurd engine timestamp (an infinite lag) would poison the sum: skipped.
  if (lag.has_value() && std::isfinite(absl::ToDoubleSeconds(*lag))) {
    event_lag_->Observe(std::max(0.0, absl::ToDoubleSeconds(*lag)));
  }
}

void KvIndexMetrics::OnDecodeError(DecodeErrorReason reason) {
  const auto r = static_cast<size_t>(reason);
  decode_errors_by_reason_[r < decode_errors_by_reason_.size() ? r : static_cast<size_t>(DecodeErrorReason::kMalformed)]
      ->Increment();
}

void KvIndexMetrics::OnFeedEvent(FeedEvent event) { feed_events_[static_cast<size_t>(event)]->Increment(); }

void KvIndexMetrics::OnSnapshotLoad(const SnapshotLoad& load) {
  families_.snapshot_loads->Get({SnapshotLoadOutcomeName(load.outcome)}).Increment();
  if (load.outcome != SnapshotLoadOutcome::kLoaded) return;
  families_.snapshot_bytes->Get({}).Set(static_cast<double>(load.bytes));
  snapshot_created_us_.store(absl::ToUnixMicros(load.created), std::memory_order_relaxed);
}

void KvIndexMetrics::OnSnapshotWrite(const absl::StatusOr<SnapshotWriteStats>& write) {
  families_.snapshot_writes->Get({write.ok() ? "ok" : "failed"}).Increment();
  if (!write.ok()) return;
  families_.snapshot_write_duration->Get({}).Observe(absl::ToDoubleSeconds(write->duration));
  families_.snapshot_bytes->Get({}).Set(static_cast<double>(write->bytes));
  families_.snapshot_pause->Get({}).Set(absl::ToDoubleSeconds(write->longest_pause));
  snapshot_created_us_.store(absl::ToUnixMicros(write->created), std::memory_order_relaxed);
}

void KvIndexMetrics::OnBootstrap(server::BootstrapOutcome outcome, uint64_t bytes) {
  families_.bootstraps->Get({server::BootstrapOutcomeName(outcome)}).Increment();
  families_.bootstrap_bytes->Get({}).Set(static_cast<double>(bytes));
}

void KvIndexMetrics::OnIndexExport(bool ok) { families_.index_exports->Get({ok ? "ok" : "failed"}).Increment(); }

void KvIndexMetrics::OnSpeculativeConfirm(absl::Duration latency) {
  families_.speculative_confirm->Get({}).Observe(absl::ToDoubleSeconds(latency));
}

void KvIndexMetrics::Collect() {
  families_.process_resident_memory->Get({}).Set(static_cast<double>(ResidentBytes()));
  if (const int64_t created = snapshot_created_us_.load(std::memory_order_relaxed); created != 0) {
    families_.snapshot_age->Get({}).Set(absl::ToDoubleSeconds(absl::Now() - absl::FromUnixMicros(created)));
  }
  absl::MutexLock lock(&mu_);
  if (pods_ != nullptr) {
    absl::flat_hash_map<WorkerState, uint64_t> workers;
    uint64_t subscribed = 0, unsubscribed = 0, incomplete = 0;
    for (const PodStatus& pod : pods_->ListPods()) {
      ++(pod.subscribed ? subscribed : unsubscribed);
      if (!pod.subscribed) continue;
      for (const WorkerStatus& worker : pod.workers) {
        ++workers[worker.state];
        incomplete += worker.history_complete ? 0 : 1;
      }
    }
    families_.incomplete_workers->Get({}).Set(static_cast<double>(incomplete));
    for (WorkerState state : kWorkerStates) {
      families_.workers->Get({WorkerStateName(state)}).Set(static_cast<double>(workers[state]));
    }
    families_.pods->Get({"true"}).Set(static_cast<double>(subscribed));
    families_.pods->Get({"false"}).Set(static_cast<double>(unsubscribed));
  }
  if (index_ != nullptr) {
    const IndexStats stats = index_->Stats();
    families_.index_blocks->Get({}).Set(static_cast<double>(stats.blocks));
    families_.index_entries->Get({}).Set(static_cast<double>(stats.entries));
    families_.index_memory->Get({}).Set(static_cast<double>(stats.memory_bytes));
    families_.index_evictions->Get({}).AdvanceTo(stats.evictions);
    families_.index_unresolved_parents->Get({}).AdvanceTo(stats.unresolved_parents);
    const SpeculativeStats speculative = index_->GetSpeculativeStats();
    families_.speculative_entries->Get({}).Set(static_cast<double>(speculative.entries));
    families_.speculative->Get({"confirmed"}).AdvanceTo(speculative.confirmed);
    families_.speculative->Get({"expired"}).AdvanceTo(speculative.expired);
    families_.speculative->Get({"dropped"}).AdvanceTo(speculative.dropped);
    // Media that emptied since the last scrape read 0, not their old value.
    absl::flat_hash_map<std::string, uint64_t> by_medium;
    for (const WorkerStats& worker : index_->ListWorkers()) {
      for (const auto& [medium, blocks] : worker.blocks_by_medium) by_medium[medium] += blocks;
    }
    for (const auto& [medium, blocks] : by_medium) families_.index_medium_entries->Get({medium});
    families_.index_medium_entries->ForEach([&](const std::vector<std::string>& values, Gauge& gauge) {
      auto it = by_medium.find(values[0]);
      gauge.Set(it == by_medium.end() ? 0.0 : static_cast<double>(it->second));
    });
  }
}

}  // namespace kvindex
