#include "core/ingest/internal/worker_feed.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <variant>

#include "absl/hash/hash.h"
#include "core/events/event_decoder.h"

namespace kvindex {

WorkerFeed::WorkerFeed(BlockWriter* writer, FeedOptions options, uint32_t dp_rank, IngestMetrics* metrics)
    : writer_(writer), options_(options), metrics_(metrics != nullptr ? *metrics : NoIngestMetrics()) {
  status_.dp_rank = dp_rank;
}

void WorkerFeed::Start(absl::Time now) {
  if (options_.resume.has_value()) {
    last_applied_ = live_last_ = static_cast<int64_t>(options_.resume->seq);
    status_.last_seq = last_applied_;
    status_.history_complete = options_.resume->history_complete;
    last_digest_ = options_.resume->digest;
    first_applied_ = 0;  // the snapshot's blocks stand for the whole stream up to seq
  }
  if (options_.has_replay) {
    StartReplay(static_cast<uint64_t>(last_applied_ + 1), -1, now);
    replay_->initial = true;
  }
  UpdateState();
}

std::vector<ReplayOp> WorkerFeed::TakeReplayOps() { return std::exchange(replay_ops_, {}); }

void WorkerFeed::OnReplayRequestFailed(absl::Time now) {
  // Requests go out one replay at a time: a failed one is the current replay's.
  if (replay_.has_value()) FinishReplay(/*timed_out=*/true, now);
}

void WorkerFeed::OnReplayRequestQueued() {
  if (replay_.has_value()) replay_->deadline = absl::InfiniteFuture();
}

void WorkerFeed::OnReplayRequestSent(absl::Time now) {
  if (replay_.has_value()) replay_->deadline = now + options_.replay_timeout;
}

void WorkerFeed::OnBadFrame() {
  ++status_.bad_frames;
  metrics_.OnFeedEvent(FeedEvent::kBadFrame);
}

void WorkerFeed::OnConnected(bool connected) {
  connected_ = connected;
  heard_ = heard_ || connected;
  UpdateState();
}

void WorkerFeed::UpdateState() {
  if (replay_.has_value()) {
    status_.state = WorkerState::kReplaying;
  } else if (connected_ || status_.batches > 0 || last_applied_ >= 0) {
    status_.state = WorkerState::kLive;
  } else {
    status_.state = WorkerState::kConnecting;
  }
}

void WorkerFeed::OnLive(uint64_t seq, std::string_view payload, absl::Time now) {
  heard_ = true;
  if (replay_.has_value()) {
    if (backlog_.size() >= options_.max_backlog) {
      ++status_.dropped;  // shows up as a gap once the replay ends
      metrics_.OnFeedEvent(FeedEvent::kDroppedBatch);
      return;
    }
    backlog_.emplace_back(seq, std::string(payload));
    return;
  }
  Process(seq, payload, now);
}

void WorkerFeed::Process(uint64_t seq, std::string_view payload, absl::Time now) {
  catch_up_at_ = absl::InfiniteFuture();  // the live stream arrives: it shows any gap itself
  const auto s = static_cast<int64_t>(seq);
  if (live_last_ >= 0 && s <= live_last_) {
    // A PUB never repeats a seq: the engine restarted and counts from 0 again.
    ForgetEngine();
  }
  if (s <= last_applied_) {
    ++status_.duplicates;
    metrics_.OnFeedEvent(FeedEvent::kDuplicateBatch);
    live_last_ = s;
    return;
  }
  const bool first = last_applied_ < 0;
  if (s == last_applied_ + 1 ||
      (first && (!options_.has_replay || !replay_reachable_))) {
    live_last_ = s;
    Apply(seq, payload, /*live=*/true);
    return;
  }
  // Gap: batches last+1 .. s-1 were lost by the live stream.
  ++status_.gaps;
  metrics_.OnFeedEvent(FeedEvent::kSeqGap);
  if (!options_.has_replay) {
    ClearUncovered();
    live_last_ = s;
    Apply(seq, payload, /*live=*/true);
    return;
  }
  backlog_.emplace_front(seq, std::string(payload));
  StartReplay(static_cast<uint64_t>(last_applied_ + 1), s, now);
}

void WorkerFeed::Apply(uint64_t seq, std::string_view payload, bool live) {
  // The first batch of a stream: what the engine published before it is unseen.
  if (last_applied_ < 0) status_.history_complete = seq == 0;
  if (first_applied_ < 0) first_applied_ = static_cast<int64_t>(seq);
  last_applied_ = static_cast<int64_t>(seq);
  status_.last_seq = last_applied_;
  const uint64_t digest = BatchDigest(payload);
  last_digest_ = digest;
  absl::StatusOr<EventBatch> batch = DecodeEventBatch(payload);
  if (!batch.ok()) {
    ++status_.decode_errors;
    metrics_.OnDecodeError(DecodeErrorReasonOf(batch.status()));
    return;
  }
  const bool clears = std::any_of(batch->events.begin(), batch->events.end(),
                                  [](const Event& e) { return std::holds_alternative<AllBlocksCleared>(e); });
  const ApplyResult applied =
      writer_->ApplyAt(*batch, BatchCursor{seq, digest, status_.history_complete || clears});
  std::optional<absl::Duration> lag;
  if (live && std::isfinite(batch->ts)) {
    lag = (options_.clock() - absl::UnixEpoch()) - absl::Seconds(batch->ts);
  }
  metrics_.OnBatchApplied(*batch, applied, lag);
  if (applied.clears > 0) status_.history_complete = true;  // the engine's cache started over, seen
  status_.unknown_removals += applied.unknown_removals;
  status_.blocks_unindexed += applied.blocks_unindexed;
  status_.unknown_chunks += applied.unknown_chunks;
  ++status_.batches;
  status_.events += batch->events.size();
  status_.last_event_ts = batch->ts;
  UpdateState();
}

void WorkerFeed::ClearUncovered() {
  status_.history_complete = false;  // the engine still holds blocks of the cleared history
  ++status_.uncovered_gaps;
  metrics_.OnFeedEvent(FeedEvent::kUncoveredGap);
  writer_->Clear();
  first_applied_ = -1;
}

void WorkerFeed::StartReplay(uint64_t from, int64_t target, absl::Time now) {
  replay_ = Replay{from, target, now + options_.replay_timeout};
  replay_->warm_start = last_applied_ < 0 && target < 0;
  if (last_applied_ >= 0 && from == static_cast<uint64_t>(last_applied_) + 1 && last_digest_.has_value()) {
    // Continuing a stream: ask for the last applied batch too, to check it is the same.
    replay_->from = static_cast<uint64_t>(last_applied_);
    replay_->verify_digest = last_digest_;
  }
  UpdateState();
  replay_ops_.push_back({ReplayOp::Kind::kRequest, replay_->from});
}

void WorkerFeed::ScheduleWarmStartRetry(absl::Time now) {
  if (warm_start_retries_ >= options_.warm_start_retries) return;
  const absl::Duration pause = options_.replay_timeout * (int64_t{1} << std::min(warm_start_retries_, 20));
  const size_t jitter = absl::Hash<std::pair<const void*, int>>()({this, warm_start_retries_}) % 1024;
  warm_start_retry_at_ = now + pause + pause * (static_cast<double>(jitter) / 2048);
}

void WorkerFeed::RetryWarmStart(absl::Time now) {
  ++warm_start_retries_;
  // Rebuilt up to the batch applied last at least: a replay ending before it
  // is an engine restart (OnReplayEnd); one timing out before it, a loss.
  replay_ = Replay{0, last_applied_ >= 0 ? last_applied_ + 1 : -1, now + options_.replay_timeout};
  replay_->warm_start = true;
  replay_->rebuild = last_applied_ >= 0;
  UpdateState();
  replay_ops_.push_back({ReplayOp::Kind::kRequest, 0});
}

void WorkerFeed::RestartFromZero(absl::Time now) {
  const int64_t target = replay_->target;
  replay_.reset();
  replay_ops_.push_back({ReplayOp::Kind::kReset});  // this replay's later replies are the old request's
  ForgetEngine();
  StartReplay(0, target, now);
}

void WorkerFeed::ForgetEngine() {
  ++status_.restarts;
  metrics_.OnFeedEvent(FeedEvent::kEngineRestart);
  writer_->Clear();
  last_applied_ = -1;
  first_applied_ = -1;
  live_last_ = -1;
  last_digest_.reset();
  status_.last_seq = -1;
}

void WorkerFeed::OnReplayBatch(uint64_t seq, std::string_view payload, absl::Time now) {
  if (!replay_.has_value()) return;  // late reply to a finished replay
  replay_reachable_ = true;
  replay_->deadline = now + options_.replay_timeout;  // progressing: not timed out
  const auto s = static_cast<int64_t>(seq);
  const bool first = !replay_->got_any();
  replay_->last_seen = std::max(replay_->last_seen, s);
  if (std::optional<uint64_t> expected = std::exchange(replay_->verify_digest, std::nullopt); expected.has_value()) {
    if (seq == replay_->from) {
      if (BatchDigest(payload) != *expected) {
        RestartFromZero(now);
        return;
      }
      return;  // the batch already applied: the same incarnation
    }
    // The buffer no longer holds the batch to check: nothing to compare; go on.
    replay_->from += 1;
  }
  if (first) {
    if (replay_->rebuild) {
      // The blocks held come from batches first_applied_..last_applied_.
      const int64_t held_from = first_applied_ >= 0 ? first_applied_ : last_applied_ + 1;
      if (s <= held_from) {
        // The buffer reaches back to all of them: the worker is rebuilt from
        // it (the live batches among them are applied again).
        writer_->Clear();
        last_applied_ = -1;
        first_applied_ = -1;
        last_digest_.reset();
        status_.last_seq = -1;
      } else if (s > last_applied_ + 1) {
        replay_->warm_start = false;  // the buffer starts past them: what lies between is lost
      }  // else it goes on from the blocks held, adding what it has after them
    }
    if (seq > replay_->from && s > last_applied_ + 1) {
      // The engine's buffer no longer holds from..seq-1. That is only a loss
      // when something was held or expected (not on a first warm start).
      if (!replay_->warm_start) {
        replay_->failed = true;
        ClearUncovered();
      }
      Apply(seq, payload, /*live=*/false);
      return;
    }
  }
  if (s <= last_applied_) {
    ++status_.duplicates;
    metrics_.OnFeedEvent(FeedEvent::kDuplicateBatch);
    return;
  }
  if (s > last_applied_ + 1 && last_applied_ >= 0) {
    // A hole inside the replay itself.
    replay_->failed = true;
    ClearUncovered();
  }
  Apply(seq, payload, /*live=*/false);
}

void WorkerFeed::OnReplayEnd(absl::Time now) {
  if (!replay_.has_value()) return;
  replay_reachable_ = true;
  if (replay_->rebuild && replay_->last_seen < replay_->target - 1) {
    // It stopped short of the batch applied last, which the engine published
    // (its buffer always holds the latest): the engine restarted since.
    replay_->target = -1;
    RestartFromZero(now);
    return;
  }
  if (replay_->verify_digest.has_value()) {
    // Not even the batch already applied: the engine's stream is behind the
    // seq applied, so it restarted.
    RestartFromZero(now);
    return;
  }
  FinishReplay(/*timed_out=*/false, now);
}

absl::Time WorkerFeed::Deadline() const {
  return replay_.has_value() ? replay_->deadline : std::min(warm_start_retry_at_, catch_up_at_);
}

void WorkerFeed::OnTimer(absl::Time now) {
  if (replay_.has_value()) {
    if (now >= replay_->deadline) FinishReplay(/*timed_out=*/true, now);
    return;
  }
  if (now >= catch_up_at_) {
    catch_up_at_ = absl::InfiniteFuture();
    StartReplay(static_cast<uint64_t>(last_applied_ + 1), -1, now);  // checks the batch applied last
    return;
  }
  if (now < warm_start_retry_at_) return;
  warm_start_retry_at_ = absl::InfiniteFuture();
  // Still worth asking: nothing seen yet, or the history is known incomplete.
  if (last_applied_ < 0 || !status_.history_complete) RetryWarmStart(now);
}

void WorkerFeed::FinishReplay(bool timed_out, absl::Time now) {
  Replay replay = *replay_;
  replay_.reset();
  if (timed_out) {
    replay_reachable_ = false;
    replay_ops_.push_back({ReplayOp::Kind::kReset});
  }
  const bool reached = replay.target < 0 || last_applied_ >= replay.target - 1;
  if (!reached) {
    // Whatever the replay did not bring is lost for good.
    ClearUncovered();  // even after a hole the replay cleared: the blocks applied since lack these
    last_applied_ = replay.target - 1;
    last_digest_.reset();  // not the digest of the batch last_applied_ names
    status_.last_seq = last_applied_;
  }
  if (timed_out && replay.warm_start && !replay.got_any()) ScheduleWarmStartRetry(now);
  // (now + an infinite catch_up_after is InfiniteFuture: never.)
  if (replay.initial && !timed_out && backlog_.empty()) catch_up_at_ = now + options_.catch_up_after;
  if (timed_out || replay.failed || !reached) {
    ++status_.replays_failed;
    metrics_.OnFeedEvent(timed_out ? FeedEvent::kReplayTimeout : FeedEvent::kReplayIncomplete);
  } else {
    ++status_.replays_ok;
    metrics_.OnFeedEvent(FeedEvent::kReplayOk);
  }
  UpdateState();
  // Apply the live batches held meanwhile, in order; one may start a new replay.
  while (!backlog_.empty() && !replay_.has_value()) {
    std::pair<uint64_t, std::string> next = std::move(backlog_.front());
    backlog_.pop_front();
    Process(next.first, next.second, now);
  }
}

}  // namespace kvindex
