#include "core/ingest/internal/worker_feed.h"

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/ingest/fake_engine.h"

namespace kvindex {
namespace {

using ::kvindex::testing::ChainBlockPayload;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Records what the feed does. A batch is identified by its ts, which the tests
// set to its seq.
class RecordingSink : public BlockWriter {
 public:
  ApplyResult Apply(const EventBatch& batch) override {
    applied.push_back(static_cast<int>(batch.ts));
    return result;
  }
  ApplyResult ApplyAt(const EventBatch& batch, const BatchCursor& cursor) override {
    cursors.push_back(cursor);
    return Apply(batch);
  }
  void Clear() override {
    ++clears;
    applied.push_back(-1);  // marks the clear's position
  }
  // Carries out the feed's replay ops as a Subscriber does: records requests
  // and resets, and reports requests that cannot be sent (send_ok false).
  void CarryOut(WorkerFeed& feed, absl::Time now) {
    for (std::vector<ReplayOp> ops = feed.TakeReplayOps(); !ops.empty(); ops = feed.TakeReplayOps()) {
      for (const ReplayOp& op : ops) {
        if (op.kind == ReplayOp::Kind::kReset) {
          ++resets;
          continue;
        }
        requests.push_back(op.from_seq);
        if (!send_ok) feed.OnReplayRequestFailed(now);
      }
    }
  }

  std::vector<int> applied;
  std::vector<BatchCursor> cursors;  // of every ApplyAt, in order
  std::vector<uint64_t> requests;
  int clears = 0;
  int resets = 0;
  bool send_ok = true;
  ApplyResult result;  // what every Apply returns
};

// A WorkerFeed whose replay ops the sink carries out after every call, as the
// Subscriber does after each turn.
class DrivenFeed {
 public:
  DrivenFeed(RecordingSink* sink, FeedOptions options, uint32_t dp_rank, IngestMetrics* metrics = nullptr)
      : sink_(sink), feed_(sink, options, dp_rank, metrics) {}

  void Start(absl::Time now) { Then(now, [&] { feed_.Start(now); }); }
  void OnLive(uint64_t seq, std::string_view payload, absl::Time now) {
    Then(now, [&] { feed_.OnLive(seq, payload, now); });
  }
  void OnReplayBatch(uint64_t seq, std::string_view payload) { OnReplayBatch(seq, payload, now_); }
  void OnReplayBatch(uint64_t seq, std::string_view payload, absl::Time now) {
    Then(now, [&] { feed_.OnReplayBatch(seq, payload, now); });
  }
  void OnReplayEnd(absl::Time now) { Then(now, [&] { feed_.OnReplayEnd(now); }); }
  void OnTimer(absl::Time now) { Then(now, [&] { feed_.OnTimer(now); }); }
  void OnBadFrame() { feed_.OnBadFrame(); }
  void OnConnected(bool connected) { feed_.OnConnected(connected); }
  absl::Time Deadline() const { return feed_.Deadline(); }
  bool replaying() const { return feed_.replaying(); }
  const WorkerStatus& status() const { return feed_.status(); }

 private:
  template <typename Call>
  void Then(absl::Time now, Call call) {
    now_ = now;
    call();
    sink_->CarryOut(feed_, now);
  }

  RecordingSink* const sink_;
  WorkerFeed feed_;
  absl::Time now_;
};

std::string Batch(uint64_t seq) {
  return ChainBlockPayload(static_cast<uint32_t>(seq), 4, static_cast<double>(seq));
}

class WorkerFeedTest : public ::testing::Test {
 protected:
  DrivenFeed MakeFeed(bool has_replay, size_t max_backlog = 100, int warm_start_retries = 5) {
    return DrivenFeed(&sink_, FeedOptions{has_replay, absl::Seconds(2), max_backlog, warm_start_retries}, 0);
  }
  void Live(DrivenFeed& feed, uint64_t seq) { feed.OnLive(seq, Batch(seq), now_); }
  void Replayed(DrivenFeed& feed, uint64_t seq) { feed.OnReplayBatch(seq, Batch(seq)); }

  RecordingSink sink_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

TEST_F(WorkerFeedTest, WithoutReplayAppliesInOrder) {
  DrivenFeed feed = MakeFeed(false);
  feed.Start(now_);
  EXPECT_THAT(sink_.requests, IsEmpty());
  for (uint64_t s : {0, 1, 2}) Live(feed, s);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2));
  EXPECT_EQ(feed.status().last_seq, 2);
  EXPECT_EQ(feed.status().batches, 3u);
  EXPECT_EQ(feed.status().events, 3u);
  EXPECT_EQ(feed.status().state, WorkerState::kLive);
}

TEST_F(WorkerFeedTest, FirstSubscribeReplaysFromZeroAndDropsDuplicates) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  EXPECT_THAT(sink_.requests, ElementsAre(0u));
  EXPECT_EQ(feed.status().state, WorkerState::kReplaying);
  Live(feed, 1);  // held while replaying
  Live(feed, 2);
  EXPECT_THAT(sink_.applied, IsEmpty());
  Replayed(feed, 0);
  Replayed(feed, 1);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2));
  EXPECT_EQ(feed.status().duplicates, 1u);
  EXPECT_EQ(feed.status().replays_ok, 1u);
  EXPECT_EQ(feed.status().state, WorkerState::kLive);
}

TEST_F(WorkerFeedTest, WarmStartFromARolledBufferIsNotALoss) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  Replayed(feed, 500);  // the engine only still holds 500..
  Replayed(feed, 501);
  feed.OnReplayEnd(now_);
  Live(feed, 502);
  EXPECT_THAT(sink_.applied, ElementsAre(500, 501, 502));
  EXPECT_EQ(sink_.clears, 0);
  EXPECT_EQ(feed.status().replays_ok, 1u);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
}

// History: a worker is complete when kvindex saw its stream from seq 0.
TEST_F(WorkerFeedTest, AStreamFirstSeenPastSeqZeroIsIncompleteUntilTheEngineStartsOver) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  EXPECT_TRUE(feed.status().history_complete);  // nothing known missing yet
  Replayed(feed, 500);  // the engine's buffer no longer holds 0..499
  feed.OnReplayEnd(now_);
  Live(feed, 501);
  EXPECT_FALSE(feed.status().history_complete);
  Live(feed, 0);  // the engine restarted: its cache started empty, seen from seq 0
  EXPECT_TRUE(feed.status().history_complete);
  EXPECT_EQ(feed.status().restarts, 1u);
}

TEST_F(WorkerFeedTest, AStreamSeenFromSeqZeroIsComplete) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  Replayed(feed, 0);
  Replayed(feed, 1);
  feed.OnReplayEnd(now_);
  Live(feed, 2);
  EXPECT_TRUE(feed.status().history_complete);
}

TEST_F(WorkerFeedTest, AnUncoveredGapMakesTheHistoryIncompleteAndAClearMakesItCompleteAgain) {
  DrivenFeed feed = MakeFeed(false);
  feed.Start(now_);
  for (uint64_t s : {0, 1}) Live(feed, s);
  EXPECT_TRUE(feed.status().history_complete);
  Live(feed, 5);  // 2..4 lost, no replay: the worker is cleared, the engine still holds their blocks
  EXPECT_FALSE(feed.status().history_complete);
  sink_.result.clears = 1;  // the next batch carries AllBlocksCleared
  Live(feed, 6);
  EXPECT_TRUE(feed.status().history_complete);
}

TEST_F(WorkerFeedTest, GapIsReplayedAndAppliedInOrder) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);  // engine had nothing yet
  Live(feed, 0);
  Live(feed, 3);  // 1 and 2 were dropped by the PUB queue
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 0u));  // from 0, the batch applied last, to check it
  Live(feed, 4);  // held
  Replayed(feed, 1);
  Replayed(feed, 2);
  Replayed(feed, 3);
  Replayed(feed, 4);
  feed.OnReplayEnd(now_);
  Live(feed, 5);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_EQ(feed.status().gaps, 1u);
  EXPECT_EQ(feed.status().duplicates, 2u);  // live 3 and 4, already replayed
  EXPECT_EQ(feed.status().replays_ok, 2u);
  EXPECT_EQ(sink_.clears, 0);
}

TEST_F(WorkerFeedTest, GapBeyondTheEngineBufferClearsTheWorker) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  Live(feed, 0);
  Live(feed, 10);
  Replayed(feed, 8);  // 1..7 fell out of the engine's buffer
  Replayed(feed, 9);
  Replayed(feed, 10);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(0, -1, 8, 9, 10));
  EXPECT_EQ(feed.status().uncovered_gaps, 1u);
  EXPECT_EQ(feed.status().replays_failed, 1u);
}

TEST_F(WorkerFeedTest, ReplayTimeoutClearsAndResumesWithHeldBatches) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  Live(feed, 0);
  Live(feed, 5);
  Live(feed, 6);
  EXPECT_EQ(feed.Deadline(), now_ + absl::Seconds(2));
  feed.OnTimer(now_ + absl::Seconds(1));  // not yet
  EXPECT_TRUE(feed.replaying());
  feed.OnTimer(now_ + absl::Seconds(2));
  EXPECT_FALSE(feed.replaying());
  EXPECT_THAT(sink_.applied, ElementsAre(0, -1, 5, 6));
  EXPECT_EQ(sink_.resets, 1);
  EXPECT_EQ(feed.status().replays_failed, 1u);
  EXPECT_EQ(feed.status().uncovered_gaps, 1u);
  Replayed(feed, 1);  // a late reply is ignored
  EXPECT_THAT(sink_.applied, ElementsAre(0, -1, 5, 6));
}

// The timeout is for silence, not for the whole replay: a long replay that
// keeps bringing batches is not cut.
TEST_F(WorkerFeedTest, AReplayThatKeepsBringingBatchesIsNotTimedOut) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  for (int i = 0; i < 5; ++i) {
    const absl::Time at = now_ + absl::Milliseconds(1500) * (i + 1);  // 7.5 s in all, 1.5 s apart
    feed.OnReplayBatch(i, Batch(i), at);
    EXPECT_EQ(feed.Deadline(), at + absl::Seconds(2));
    feed.OnTimer(at);
    EXPECT_TRUE(feed.replaying());
  }
  feed.OnReplayEnd(now_ + absl::Seconds(8));
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_EQ(feed.status().replays_ok, 1u);
  EXPECT_EQ(feed.status().replays_failed, 0u);
}

// A warm start nobody answered is asked again after a pause; the first reply
// clears what the live stream gave meanwhile and the replay rebuilds the
// worker from seq 0: complete, nothing lost or doubled.
TEST_F(WorkerFeedTest, AnUnansweredWarmStartIsAskedAgainAndRebuildsTheWorker) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  const absl::Time timed_out = now_ + absl::Seconds(2);
  feed.OnTimer(timed_out);
  EXPECT_FALSE(feed.replaying());
  Live(feed, 5);  // applied as the first batch seen: the history is incomplete
  Live(feed, 6);
  EXPECT_FALSE(feed.status().history_complete);
  // The retry comes after replay_timeout plus up to half of it.
  const absl::Time retry = feed.Deadline();
  EXPECT_GE(retry, timed_out + absl::Seconds(2));
  EXPECT_LE(retry, timed_out + absl::Seconds(3));
  feed.OnTimer(retry - absl::Milliseconds(1));
  EXPECT_THAT(sink_.requests, ElementsAre(0u));
  feed.OnTimer(retry);
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 0u));
  EXPECT_TRUE(feed.replaying());
  feed.OnLive(7, Batch(7), retry);  // held
  for (uint64_t s = 0; s <= 7; ++s) feed.OnReplayBatch(s, Batch(s), retry);
  feed.OnReplayEnd(retry);
  Live(feed, 8);
  EXPECT_THAT(sink_.applied, ElementsAre(5, 6, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_TRUE(feed.status().history_complete);
  EXPECT_EQ(feed.status().last_seq, 8);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
  EXPECT_EQ(feed.status().replays_failed, 1u);
  EXPECT_EQ(feed.status().replays_ok, 1u);
  EXPECT_EQ(feed.Deadline(), absl::InfiniteFuture());  // nothing more to ask
}

// The catch-up: a warm start answered with nothing held, then silence: the
// feed asks once more, catch_up_after later, from the batch applied last, and
// applies what the engine published while the live stream was not yet
// reaching this worker (ZeroMQ's slow joiner). No gap is counted: nothing
// was lost.
TEST_F(WorkerFeedTest, AQuietEngineIsAskedOnceMoreAfterTheWarmStart) {
  DrivenFeed feed(&sink_, FeedOptions{.has_replay = true, .catch_up_after = absl::Seconds(1)}, 0);
  feed.Start(now_);
  for (uint64_t s : {0, 1, 2}) Replayed(feed, s);
  feed.OnReplayEnd(now_);
  EXPECT_EQ(feed.Deadline(), now_ + absl::Seconds(1));
  feed.OnTimer(now_ + absl::Milliseconds(999));
  EXPECT_THAT(sink_.requests, ElementsAre(0u));
  const absl::Time at = now_ + absl::Seconds(1);
  feed.OnTimer(at);
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 2u));  // from the batch applied last, to check it
  EXPECT_TRUE(feed.replaying());
  for (uint64_t s : {2, 3, 4}) feed.OnReplayBatch(s, Batch(s), at);  // 3 and 4: published meanwhile
  feed.OnReplayEnd(at);
  Live(feed, 5);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_EQ(feed.status().gaps, 0u);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
  EXPECT_EQ(feed.status().replays_ok, 2u);
  EXPECT_TRUE(feed.status().history_complete);
  EXPECT_EQ(feed.Deadline(), absl::InfiniteFuture());  // once only
}

// A live batch before the catch-up is due shows any gap itself: no catch-up.
// Nor is there one after a warm start that held live batches, or timed out.
TEST_F(WorkerFeedTest, TheCatchUpIsNotAskedOnceTheLiveStreamArrives) {
  const FeedOptions options{.has_replay = true, .catch_up_after = absl::Seconds(1)};
  {
    DrivenFeed feed(&sink_, options, 0);
    feed.Start(now_);
    Replayed(feed, 0);
    feed.OnReplayEnd(now_);
    Live(feed, 1);
    EXPECT_EQ(feed.Deadline(), absl::InfiniteFuture());
    feed.OnTimer(now_ + absl::Seconds(5));
    EXPECT_THAT(sink_.requests, ElementsAre(0u));
  }
  sink_.requests.clear();
  {
    DrivenFeed feed(&sink_, options, 0);
    feed.Start(now_);
    Live(feed, 1);  // held: the live stream already reaches the worker
    Replayed(feed, 0);
    feed.OnReplayEnd(now_);
    EXPECT_EQ(feed.Deadline(), absl::InfiniteFuture());
  }
  sink_.requests.clear();
  {
    DrivenFeed feed(&sink_, options, 0);
    feed.Start(now_);
    feed.OnTimer(now_ + absl::Seconds(2));  // timed out: the warm-start retry, not a catch-up
    EXPECT_GE(feed.Deadline(), now_ + absl::Seconds(4));
  }
}

// The catch-up's check finds a different batch at the seq applied last: the
// engine restarted meanwhile, and the worker is rebuilt from seq 0.
TEST_F(WorkerFeedTest, ACatchUpFindingAnotherBatchAtTheLastSeqReplaysFromZero) {
  DrivenFeed feed(&sink_, FeedOptions{.has_replay = true, .catch_up_after = absl::Seconds(1)}, 0);
  feed.Start(now_);
  for (uint64_t s : {0, 1}) Replayed(feed, s);
  feed.OnReplayEnd(now_);
  const absl::Time at = now_ + absl::Seconds(1);
  feed.OnTimer(at);
  feed.OnReplayBatch(1, Batch(7), at);  // not the batch applied as seq 1
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 1u, 0u));
  EXPECT_EQ(feed.status().restarts, 1u);
}

// With no answer ever, the warm start is asked warm_start_retries more times,
// each pause twice the last (plus up to half of it), and then no more.
TEST_F(WorkerFeedTest, WarmStartRetriesBackOffAndStop) {
  DrivenFeed feed = MakeFeed(true, /*max_backlog=*/100, /*warm_start_retries=*/3);
  feed.Start(now_);
  absl::Time at = now_ + absl::Seconds(2);
  absl::Duration pause = absl::Seconds(2);
  for (int retry = 1; retry <= 3; ++retry) {
    feed.OnTimer(at);  // the replay asked last times out
    ASSERT_FALSE(feed.replaying());
    EXPECT_GE(feed.Deadline() - at, pause) << retry;
    EXPECT_LE(feed.Deadline() - at, pause * 1.5) << retry;
    at = feed.Deadline();
    feed.OnTimer(at);
    ASSERT_TRUE(feed.replaying()) << retry;
    at += absl::Seconds(2);
    pause *= 2;
  }
  feed.OnTimer(at);
  EXPECT_FALSE(feed.replaying());
  EXPECT_EQ(feed.Deadline(), absl::InfiniteFuture());
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 0u, 0u, 0u));
  EXPECT_EQ(feed.status().replays_failed, 4u);
}

// A stream seen from seq 0 after all needs no retry.
TEST_F(WorkerFeedTest, NoWarmStartRetryOnceTheStreamIsSeenFromSeqZero) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnTimer(now_ + absl::Seconds(2));
  Live(feed, 0);  // the engine had published nothing before
  EXPECT_TRUE(feed.status().history_complete);
  feed.OnTimer(now_ + absl::Seconds(10));
  EXPECT_THAT(sink_.requests, ElementsAre(0u));
  EXPECT_FALSE(feed.replaying());
}

// A rebuild whose buffer ends short of what the live stream gave has lost
// what lies between: cleared and counted, as a gap's replay is.
// A warm start that timed out, then the live batches 5 and 6, then the retry
// (asked at the time it is due): the fixture for the rebuild tests below.
class WarmStartRetryTest : public WorkerFeedTest {
 protected:
  void LiveThenRetry(DrivenFeed& feed) {
    feed.Start(now_);
    feed.OnTimer(now_ + absl::Seconds(2));
    Live(feed, 5);
    Live(feed, 6);
    feed.OnTimer(feed.Deadline());
    ASSERT_TRUE(feed.replaying());
    ASSERT_THAT(sink_.requests, ElementsAre(0u, 0u));
  }
};

// The buffer starts after the first live batch: clearing would lose batch 5
// for good, so the replay goes on from the blocks held.
TEST_F(WarmStartRetryTest, ABufferStartingAfterTheFirstLiveBatchKeepsWhatIsHeld) {
  DrivenFeed feed = MakeFeed(true);
  ASSERT_NO_FATAL_FAILURE(LiveThenRetry(feed));
  Replayed(feed, 6);
  Replayed(feed, 7);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(5, 6, 7));
  EXPECT_EQ(sink_.clears, 0);
  EXPECT_EQ(feed.status().duplicates, 1u);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
  EXPECT_EQ(feed.status().last_seq, 7);
  EXPECT_FALSE(feed.status().history_complete);
}

// The buffer starts past the last batch applied: what lies between is lost.
TEST_F(WarmStartRetryTest, ABufferStartingPastWhatIsHeldIsAnUncoveredGap) {
  DrivenFeed feed = MakeFeed(true);
  ASSERT_NO_FATAL_FAILURE(LiveThenRetry(feed));
  Replayed(feed, 8);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(5, 6, -1, 8));
  EXPECT_EQ(feed.status().uncovered_gaps, 1u);
  EXPECT_EQ(feed.status().last_seq, 8);
}

// The buffer always holds the latest batch: an empty reply after batch 6 was
// seen means the engine restarted.
TEST_F(WarmStartRetryTest, AnEmptyReplyMeansTheEngineRestarted) {
  DrivenFeed feed = MakeFeed(true);
  ASSERT_NO_FATAL_FAILURE(LiveThenRetry(feed));
  feed.OnReplayEnd(now_);
  EXPECT_EQ(feed.status().restarts, 1u);
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 0u, 0u));
  ASSERT_TRUE(feed.replaying());
  Replayed(feed, 0);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(5, 6, -1, 0));
  EXPECT_TRUE(feed.status().history_complete);
  EXPECT_EQ(feed.status().last_seq, 0);
}

// The buffer always holds the latest batch, so a rebuild ending before the
// batch applied last comes from a new incarnation: a restart, replayed from 0;
// the new incarnation's live batch held meanwhile is not taken for the old
// stream's.
TEST_F(WarmStartRetryTest, ARebuildEndingShortOfWhatWasAppliedIsAnEngineRestart) {
  DrivenFeed feed = MakeFeed(true);
  ASSERT_NO_FATAL_FAILURE(LiveThenRetry(feed));
  for (uint64_t s = 0; s <= 2; ++s) Replayed(feed, s);  // the new incarnation's 0..2
  Live(feed, 3);                                        // held
  feed.OnReplayEnd(now_);
  EXPECT_EQ(feed.status().restarts, 1u);
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 0u, 0u));
  ASSERT_TRUE(feed.replaying());
  for (uint64_t s = 0; s <= 3; ++s) Replayed(feed, s);
  feed.OnReplayEnd(now_);
  Live(feed, 4);
  EXPECT_THAT(sink_.applied, ElementsAre(5, 6, -1, 0, 1, 2, -1, 0, 1, 2, 3, 4));
  EXPECT_EQ(feed.status().last_seq, 4);
  EXPECT_TRUE(feed.status().history_complete);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
}

// A replay with a hole (cleared there) that also ends short of the gap: the
// blocks applied after the hole lack the batches that never came: cleared again.
TEST_F(WorkerFeedTest, AReplayWithAHoleThatEndsShortClearsAgain) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  for (uint64_t s = 0; s <= 4; ++s) Live(feed, s);
  Live(feed, 10);  // gap: replay from 4 (to check it), 10 held
  Replayed(feed, 4);
  Replayed(feed, 5);
  Replayed(feed, 7);  // 6 missing: cleared, 7 applied
  feed.OnReplayEnd(now_);  // 8 and 9 never came
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, 4, 5, -1, 7, -1, 10));
  EXPECT_EQ(feed.status().uncovered_gaps, 2u);
  EXPECT_EQ(feed.status().last_seq, 10);
}

TEST_F(WorkerFeedTest, ReplayEndingShortOfTheGapClears) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  Live(feed, 0);
  Live(feed, 4);
  Replayed(feed, 1);
  feed.OnReplayEnd(now_);  // 2 and 3 never came
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, -1, 4));
  EXPECT_EQ(feed.status().uncovered_gaps, 1u);
}

TEST_F(WorkerFeedTest, GapWithoutReplayEndpointClears) {
  DrivenFeed feed = MakeFeed(false);
  feed.Start(now_);
  Live(feed, 7);  // first message: nothing to compare with
  Live(feed, 8);
  Live(feed, 12);
  EXPECT_THAT(sink_.applied, ElementsAre(7, 8, -1, 12));
  EXPECT_EQ(feed.status().gaps, 1u);
  EXPECT_EQ(feed.status().uncovered_gaps, 1u);
}

TEST_F(WorkerFeedTest, EngineRestartClearsThenApplies) {
  DrivenFeed feed = MakeFeed(false);
  feed.Start(now_);
  for (uint64_t s : {0, 1, 2}) Live(feed, s);
  Live(feed, 0);  // restarted
  Live(feed, 1);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, -1, 0, 1));
  EXPECT_EQ(feed.status().restarts, 1u);
  EXPECT_EQ(feed.status().last_seq, 1);
}

TEST_F(WorkerFeedTest, RestartMissingItsFirstBatchesReplaysFromZero) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  for (uint64_t s : {0, 1, 2, 3}) Live(feed, s);
  Live(feed, 2);  // restarted; 0 and 1 went out before we reconnected
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 0u));
  Replayed(feed, 0);
  Replayed(feed, 1);
  Replayed(feed, 2);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, -1, 0, 1, 2));
  EXPECT_EQ(feed.status().restarts, 1u);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
}

TEST_F(WorkerFeedTest, UndecodablePayloadIsCountedAndItsSeqConsumed) {
  DrivenFeed feed = MakeFeed(false);
  feed.Start(now_);
  Live(feed, 0);
  feed.OnLive(1, "\xc1 not msgpack", now_);
  Live(feed, 2);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 2));
  EXPECT_EQ(feed.status().decode_errors, 1u);
  EXPECT_EQ(feed.status().gaps, 0u);
}

TEST_F(WorkerFeedTest, BacklogOverflowDropsAndIsRecoveredAsAGap) {
  DrivenFeed feed = MakeFeed(true, /*max_backlog=*/2);
  feed.Start(now_);
  for (uint64_t s : {0, 1, 2, 3}) Live(feed, s);  // 2 and 3 dropped
  EXPECT_EQ(feed.status().dropped, 2u);
  feed.OnReplayEnd(now_);  // engine had nothing when asked
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1));
  Live(feed, 4);  // reveals the gap 2..3
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 1u));
  Replayed(feed, 2);
  Replayed(feed, 3);
  Replayed(feed, 4);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, 4));
}

TEST_F(WorkerFeedTest, UnsendableReplayRequestFailsAtOnce) {
  sink_.send_ok = false;
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  EXPECT_FALSE(feed.replaying());
  EXPECT_EQ(feed.status().replays_failed, 1u);
  Live(feed, 3);  // replay unreachable: apply from where the stream is
  EXPECT_THAT(sink_.applied, ElementsAre(3));
}

// The feed never touches the replay socket: it asks, in order, and its owner
// carries the work out when it is not reading.
TEST_F(WorkerFeedTest, ReplaySocketWorkIsAskedForInOrder) {
  WorkerFeed feed(&sink_, FeedOptions{true, absl::Seconds(2), 100}, 0);
  feed.Start(now_);
  EXPECT_THAT(feed.TakeReplayOps(), ElementsAre(ReplayOp{ReplayOp::Kind::kRequest, 0}));
  EXPECT_THAT(feed.TakeReplayOps(), IsEmpty());
  EXPECT_TRUE(feed.replaying());
  feed.OnLive(4, Batch(4), now_);  // held while the first replay is out
  feed.OnTimer(now_ + absl::Seconds(2));
  // The abandoned replay's socket is reset before anything else; the held
  // batch then applies (replay unreachable: no new request).
  EXPECT_THAT(feed.TakeReplayOps(), ElementsAre(ReplayOp{ReplayOp::Kind::kReset}));
  EXPECT_THAT(sink_.applied, ElementsAre(4));
  EXPECT_EQ(sink_.resets, 0);  // nothing was carried out behind the owner's back
}

// What the index reports it could not apply is counted in the status and
// reported to the metrics with the batch.
TEST_F(WorkerFeedTest, WhatTheIndexCouldNotApplyIsCounted) {
  class Skips : public IngestMetrics {
   public:
    void OnBatchApplied(const EventBatch&, const ApplyResult& applied, std::optional<absl::Duration>) override {
      unknown_removals += applied.unknown_removals;
    }
    void OnDecodeError(DecodeErrorReason) override {}
    void OnFeedEvent(FeedEvent) override {}
    uint64_t unknown_removals = 0;
  } metrics;
  sink_.result = ApplyResult{.blocks_unindexed = 2, .unknown_removals = 3, .unknown_chunks = 1};
  DrivenFeed feed(&sink_, FeedOptions{false, absl::Seconds(2), 100}, 0, &metrics);
  feed.Start(now_);
  Live(feed, 0);
  Live(feed, 1);
  EXPECT_EQ(feed.status().unknown_removals, 6u);
  EXPECT_EQ(feed.status().blocks_unindexed, 4u);
  EXPECT_EQ(feed.status().unknown_chunks, 2u);
  EXPECT_EQ(metrics.unknown_removals, 6u);
}

TEST_F(WorkerFeedTest, ConnectedStateWithoutTraffic) {
  DrivenFeed feed = MakeFeed(false);
  feed.Start(now_);
  EXPECT_EQ(feed.status().state, WorkerState::kConnecting);
  feed.OnConnected(true);
  EXPECT_EQ(feed.status().state, WorkerState::kLive);
  feed.OnConnected(false);
  EXPECT_EQ(feed.status().state, WorkerState::kConnecting);
}

// Tallies what the feed reports to its IngestMetrics.
class RecordingMetrics : public IngestMetrics {
 public:
  void OnBatchApplied(const EventBatch& batch, const ApplyResult& applied,
                      std::optional<absl::Duration> lag) override {
    ++batches;
    events += batch.events.size();
    lags.push_back(lag);
  }
  void OnDecodeError(DecodeErrorReason reason) override { decode_errors.push_back(reason); }
  void OnFeedEvent(FeedEvent event) override { ++counts[static_cast<size_t>(event)]; }

  uint64_t Count(FeedEvent event) const { return counts[static_cast<size_t>(event)]; }

  uint64_t batches = 0;
  uint64_t events = 0;
  std::vector<std::optional<absl::Duration>> lags;
  std::vector<DecodeErrorReason> decode_errors;
  std::array<uint64_t, kFeedEventCount> counts{};
};

// Every counter of WorkerStatus is reported to the metrics as it happens, so
// the metrics agree with the status through gaps, replays (ok, incomplete,
// timed out), restarts, decode errors, bad frames, duplicates and drops.
TEST_F(WorkerFeedTest, MetricsAgreeWithTheStatus) {
  RecordingMetrics metrics;
  DrivenFeed feed(&sink_, FeedOptions{true, absl::Seconds(2), /*max_backlog=*/2}, 0, &metrics);
  feed.Start(now_);
  Replayed(feed, 0);
  feed.OnReplayEnd(now_);                                  // replay ok
  Live(feed, 0);                                           // duplicate
  Live(feed, 1);
  feed.OnLive(2, "\xc1 not msgpack", now_);                // decode error
  Live(feed, 5);                                           // gap: replay from 3
  for (uint64_t s : {6, 7, 8}) Live(feed, s);              // 6 held (with 5), 7 and 8 dropped
  Replayed(feed, 3);
  feed.OnReplayEnd(now_);                                  // incomplete: 4 never came, cleared
  Live(feed, 9);                                           // gap (7, 8 dropped): replay from 7
  feed.OnTimer(now_ + absl::Seconds(3));                   // replay timed out, cleared
  feed.OnBadFrame();
  Live(feed, 0);                                           // engine restart
  const WorkerStatus& status = feed.status();
  EXPECT_EQ(status.replays_ok, 1u);
  EXPECT_EQ(status.replays_failed, 2u);
  EXPECT_GE(status.restarts, 1u);

  EXPECT_EQ(metrics.batches, status.batches);
  EXPECT_EQ(metrics.events, status.events);
  EXPECT_EQ(metrics.decode_errors.size(), status.decode_errors);
  EXPECT_THAT(metrics.decode_errors, ElementsAre(DecodeErrorReason::kMalformed));
  EXPECT_EQ(metrics.Count(FeedEvent::kBadFrame), status.bad_frames);
  EXPECT_EQ(metrics.Count(FeedEvent::kDuplicateBatch), status.duplicates);
  EXPECT_EQ(metrics.Count(FeedEvent::kDroppedBatch), status.dropped);
  EXPECT_EQ(metrics.Count(FeedEvent::kSeqGap), status.gaps);
  EXPECT_EQ(metrics.Count(FeedEvent::kUncoveredGap), status.uncovered_gaps);
  EXPECT_EQ(metrics.Count(FeedEvent::kEngineRestart), status.restarts);
  EXPECT_EQ(metrics.Count(FeedEvent::kReplayOk), status.replays_ok);
  EXPECT_EQ(metrics.Count(FeedEvent::kReplayTimeout), 1u);
  EXPECT_EQ(metrics.Count(FeedEvent::kReplayIncomplete), 1u);
  EXPECT_GT(status.dropped, 0u);
  EXPECT_GT(status.duplicates, 0u);
}

// Lag (the clock after the apply - the batch's engine ts) is reported for live batches only.
TEST_F(WorkerFeedTest, LagIsReportedForLiveBatchesOnly) {
  RecordingMetrics metrics;
  FeedOptions options{true, absl::Seconds(2), 100};
  options.clock = [] { return absl::FromUnixSeconds(1000); };
  DrivenFeed feed(&sink_, options, 0, &metrics);
  feed.Start(now_);
  Replayed(feed, 0);  // ts 0
  feed.OnReplayEnd(now_);
  Live(feed, 1);  // ts 1, applied at 1000
  ASSERT_EQ(metrics.lags.size(), 2u);
  EXPECT_EQ(metrics.lags[0], std::nullopt);
  EXPECT_EQ(metrics.lags[1], absl::Seconds(999));
}

// Each applied batch is recorded with its cursor: seq, the payload's digest, history_complete after it.
TEST_F(WorkerFeedTest, EveryAppliedBatchCarriesItsCursor) {
  DrivenFeed feed = MakeFeed(false);
  feed.Start(now_);
  Live(feed, 4);  // a stream seen from 4: incomplete
  Live(feed, 5);
  ASSERT_EQ(sink_.cursors.size(), 2u);
  EXPECT_EQ(sink_.cursors[0], (BatchCursor{4, BatchDigest(Batch(4)), false}));
  EXPECT_EQ(sink_.cursors[1], (BatchCursor{5, BatchDigest(Batch(5)), false}));
  EXPECT_NE(sink_.cursors[0].digest, sink_.cursors[1].digest);
}

class ResumedFeedTest : public WorkerFeedTest {
 protected:
  DrivenFeed MakeResumed(bool has_replay, BatchCursor cursor) {
    FeedOptions options{has_replay, absl::Seconds(2), 100};
    options.resume = cursor;
    return DrivenFeed(&sink_, options, 0);
  }
};

TEST_F(ResumedFeedTest, AResumedWorkerReplaysAfterItsSavedSeqAndKeepsItsHistory) {
  DrivenFeed feed = MakeResumed(true, BatchCursor{9, 1234, false});
  feed.Start(now_);
  EXPECT_THAT(sink_.requests, ElementsAre(9u));  // the saved batch too, to check it
  EXPECT_EQ(feed.status().last_seq, 9);
  EXPECT_FALSE(feed.status().history_complete);
  Replayed(feed, 10);
  Replayed(feed, 11);
  feed.OnReplayEnd(now_);
  Live(feed, 11);  // already replayed
  Live(feed, 12);
  EXPECT_THAT(sink_.applied, ElementsAre(10, 11, 12));
  EXPECT_EQ(feed.status().duplicates, 1u);
  EXPECT_EQ(feed.status().replays_ok, 1u);
  EXPECT_FALSE(feed.status().history_complete);
  EXPECT_EQ(sink_.clears, 0);
}

TEST_F(ResumedFeedTest, AReplayThatNoLongerReachesTheSavedSeqClearsTheWorker) {
  DrivenFeed feed = MakeResumed(true, BatchCursor{9, 1234, true});
  feed.Start(now_);
  Replayed(feed, 15);  // the engine's buffer moved past 10
  Replayed(feed, 16);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(-1, 15, 16));
  EXPECT_EQ(feed.status().uncovered_gaps, 1u);
  EXPECT_FALSE(feed.status().history_complete);
}

TEST_F(ResumedFeedTest, ALiveSeqAtOrBelowTheSavedOneIsAnEngineRestart) {
  DrivenFeed feed = MakeResumed(true, BatchCursor{50, 1234, true});
  feed.Start(now_);
  feed.OnReplayEnd(now_);  // not even 50 in this incarnation's buffer: it restarted
  EXPECT_EQ(feed.status().restarts, 1u);
  EXPECT_THAT(sink_.applied, ElementsAre(-1));
  EXPECT_THAT(sink_.requests, ElementsAre(50u, 0u));  // the new incarnation from 0
  Live(feed, 3);  // held while the replay from 0 is out
  for (uint64_t s : {0, 1, 2}) Replayed(feed, s);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(-1, 0, 1, 2, 3));
  EXPECT_TRUE(feed.status().history_complete);
}

TEST_F(ResumedFeedTest, WithoutReplayTheNextSeqContinuesAndAJumpClears) {
  {
    DrivenFeed feed = MakeResumed(false, BatchCursor{9, 1234, true});
    feed.Start(now_);
    EXPECT_THAT(sink_.requests, IsEmpty());
    Live(feed, 10);
    EXPECT_THAT(sink_.applied, ElementsAre(10));
    EXPECT_TRUE(feed.status().history_complete);
  }
  sink_.applied.clear();
  DrivenFeed feed = MakeResumed(false, BatchCursor{9, 1234, true});
  feed.Start(now_);
  Live(feed, 12);
  EXPECT_THAT(sink_.applied, ElementsAre(-1, 12));
  EXPECT_EQ(feed.status().uncovered_gaps, 1u);
  EXPECT_FALSE(feed.status().history_complete);
}

// The second incarnation of an engine: the same seqs, other batches.
std::string Reborn(uint64_t seq) {
  return ChainBlockPayload(static_cast<uint32_t>(seq + 1000), 4, static_cast<double>(seq));
}

TEST_F(WorkerFeedTest, GapReplayChecksTheLastAppliedBatchAndGoesOn) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  Live(feed, 0);
  Live(feed, 1);
  Live(feed, 4);  // 2 and 3 lost
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 1u));
  for (uint64_t s : {1, 2, 3, 4}) Replayed(feed, s);  // 1: the same batch as applied
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_EQ(feed.status().restarts, 0u);
  EXPECT_EQ(feed.status().duplicates, 1u);  // live 4, which the replay applied; not the checked 1
  EXPECT_EQ(feed.status().replays_ok, 2u);
}

// The known limit of seq-order detection: an engine that restarts while the
// live stream is cut and publishes past the old seq. Its first live batch
// after that is a gap; the batch the replay returns for the last applied seq
// is not the one applied: the worker is cleared and replayed from 0.
TEST_F(WorkerFeedTest, EngineThatRestartedAndPublishedPastTheOldSeqIsDetected) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  for (uint64_t s = 0; s <= 4; ++s) Live(feed, s);
  feed.OnLive(9, Reborn(9), now_);  // the new incarnation, already at 9
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 4u));
  feed.OnReplayBatch(4, Reborn(4));
  EXPECT_EQ(feed.status().restarts, 1u);
  EXPECT_EQ(sink_.resets, 1);
  EXPECT_THAT(sink_.requests, ElementsAre(0u, 4u, 0u));
  for (uint64_t s = 0; s <= 9; ++s) feed.OnReplayBatch(s, Reborn(s));
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3, 4, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  EXPECT_EQ(feed.status().last_seq, 9);
  EXPECT_TRUE(feed.status().history_complete);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
}

TEST_F(WorkerFeedTest, ABufferPastTheCheckedBatchCannotCheckItAndGoesOn) {
  DrivenFeed feed = MakeFeed(true);
  feed.Start(now_);
  feed.OnReplayEnd(now_);
  Live(feed, 0);
  Live(feed, 1);
  Live(feed, 3);
  Replayed(feed, 2);  // 1 fell out of the buffer, 2 did not: nothing lost
  Replayed(feed, 3);
  feed.OnReplayEnd(now_);
  EXPECT_THAT(sink_.applied, ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(feed.status().restarts, 0u);
  EXPECT_EQ(feed.status().uncovered_gaps, 0u);
}

TEST_F(ResumedFeedTest, TheSavedBatchIsCheckedAgainstItsDigest) {
  {
    DrivenFeed feed = MakeResumed(true, BatchCursor{9, BatchDigest(Batch(9)), true});
    feed.Start(now_);
    Replayed(feed, 9);  // the same engine
    Replayed(feed, 10);
    feed.OnReplayEnd(now_);
    EXPECT_THAT(sink_.applied, ElementsAre(10));
    EXPECT_EQ(feed.status().restarts, 0u);
    EXPECT_TRUE(feed.status().history_complete);
  }
  sink_ = RecordingSink();
  {
    // Restarted while kvindex was down, and published past the saved seq.
    DrivenFeed feed = MakeResumed(true, BatchCursor{9, BatchDigest(Batch(9)), true});
    feed.Start(now_);
    feed.OnReplayBatch(9, Reborn(9));
    EXPECT_EQ(feed.status().restarts, 1u);
    EXPECT_THAT(sink_.requests, ElementsAre(9u, 0u));
    for (uint64_t s = 0; s <= 12; ++s) feed.OnReplayBatch(s, Reborn(s));
    feed.OnReplayEnd(now_);
    EXPECT_THAT(sink_.applied, ElementsAre(-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12));
    EXPECT_TRUE(feed.status().history_complete);
  }
}

}  // namespace
}  // namespace kvindex
