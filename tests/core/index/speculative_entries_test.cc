// PrefixIndex::RecordRouting and the SPECULATIVE tier of Match: confirmation,
// expiry, drops, the cap, the weight-0 rule, the adaptive TTL, pods without
// KV events. Time comes from an injected clock: no sleeps, no timed assertions.

#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "core/index/block_hash.h"
#include "core/index/prefix_index.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;

const WorkerKey kA{"ns/a", 0};
const WorkerKey kB{"ns/b", 0};
const WorkerContext kModel{"llama", ""};

std::vector<uint32_t> Tokens(uint32_t n, uint32_t first = 1) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

// Blocks [first, first + n) of Tokens(...) at block size 2, engine hashes 100 + i.
BlockStored StoredBlocks(uint32_t first, uint32_t n) {
  BlockStored s;
  for (uint32_t i = first; i < first + n; ++i) s.block_hashes.push_back(100 + i);
  if (first > 0) s.parent_block_hash = 100 + first - 1;
  s.token_ids = Tokens(2 * n, 1 + 2 * first);
  s.block_size = 2;
  return s;
}

EventBatch Batch(std::vector<Event> events) {
  EventBatch b;
  b.ts = 1700000000.5;
  b.events = std::move(events);
  return b;
}

// An index whose speculative clock the test moves, hints at block size 2 by default.
class SpeculativeTest : public ::testing::Test {
 protected:
  static IndexOptions Options(size_t max_entries = 0) {
    IndexOptions o;
    o.speculative.default_block_size = 2;
    o.speculative.max_entries = max_entries;
    return o;
  }
  explicit SpeculativeTest(IndexOptions options = Options()) : options_(WithClock(std::move(options))), index_(options_) {}

  IndexOptions WithClock(IndexOptions o) {
    o.speculative.clock = [this] { return now_; };
    return o;
  }

  RoutingResult Route(const WorkerKey& worker, const std::vector<uint32_t>& tokens,
                      std::optional<absl::Duration> ttl = absl::Seconds(1), PrefixIndex* index = nullptr) {
    RoutingHint hint{.worker = worker, .model = "llama", .token_ids = tokens, .ttl = ttl};
    absl::StatusOr<RoutingResult> r = (index ? *index : index_).RecordRouting(hint);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : RoutingResult{};
  }

  MatchResult Match(const std::vector<uint32_t>& tokens, absl::flat_hash_map<std::string, double> weights = {},
                    const PrefixIndex* index = nullptr) {
    auto r = (index ? *index : index_).Match(MatchQuery{.model = "llama", .token_ids = tokens, .medium_weights = weights});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : MatchResult{};
  }

  // (worker, matched blocks) in answer order.
  static std::vector<std::pair<WorkerKey, uint32_t>> Runs(const MatchResult& r) {
    std::vector<std::pair<WorkerKey, uint32_t>> out;
    for (const WorkerMatch& m : r.workers) out.emplace_back(m.worker, m.matched_blocks);
    return out;
  }

  absl::Time now_ = absl::FromUnixSeconds(1000000);
  IndexOptions options_;
  PrefixIndex index_;
};

TEST_F(SpeculativeTest, HintedBlocksMatchAsTheSpeculativeTier) {
  const RoutingResult routed = Route(kA, Tokens(7));
  EXPECT_EQ(routed.blocks, 3u);
  EXPECT_EQ(routed.ttl, absl::Seconds(1));
  const MatchResult r = Match(Tokens(8));
  EXPECT_EQ(r.block_size, 2u);
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_EQ(r.workers[0].worker, kA);
  EXPECT_EQ(r.workers[0].matched_blocks, 3u);
  EXPECT_EQ(r.workers[0].matched_tokens, 6u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("SPECULATIVE", 3u)));
  EXPECT_DOUBLE_EQ(r.workers[0].score, 3.0);
  EXPECT_EQ(index_.GetSpeculativeStats().entries, 3u);
  EXPECT_EQ(index_.GetWorkerStats(kA)->speculative_entries, 3u);
}

TEST_F(SpeculativeTest, MatchWithoutHintsNamesNoSpeculativeTier) {
  (void)index_.Apply(kA, kModel, Batch({StoredBlocks(0, 2)}));
  const MatchResult r = Match(Tokens(8));
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 2u)));
}

TEST_F(SpeculativeTest, EngineStoreConfirmsTheEntryWhichLeavesTheSpeculativeTier) {
  std::vector<absl::Duration> latencies;
  (void)index_.Apply(kA, kModel, Batch({StoredBlocks(0, 2)}));
  // Blocks 0-1 are held: only 2-3 become speculative, never counted twice.
  EXPECT_EQ(Route(kA, Tokens(8)).blocks, 2u);
  MatchResult r = Match(Tokens(8));
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_EQ(r.workers[0].matched_blocks, 4u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 2u), Pair("SPECULATIVE", 2u)));

  now_ += absl::Milliseconds(300);
  (void)index_.Apply(kA, kModel, Batch({StoredBlocks(2, 1)}));
  r = Match(Tokens(8));
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_EQ(r.workers[0].matched_blocks, 4u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 3u), Pair("SPECULATIVE", 1u)));
  const SpeculativeStats stats = index_.GetSpeculativeStats();
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.confirmed, 1u);
  // The engine hash map holds the engine's blocks only.
  EXPECT_EQ(index_.EngineHashes(kA).size(), 3u);
}

TEST_F(SpeculativeTest, ConfirmationLatencyIsObserved) {
  std::vector<absl::Duration> seen;
  IndexOptions o = WithClock(Options());
  o.speculative.on_confirm = [&seen](absl::Duration d) { seen.push_back(d); };
  PrefixIndex index(o);
  Route(kA, Tokens(4), absl::Seconds(1), &index);
  now_ += absl::Milliseconds(250);
  (void)index.Apply(kA, kModel, Batch({StoredBlocks(0, 2)}));
  EXPECT_THAT(seen, ElementsAre(absl::Milliseconds(250), absl::Milliseconds(250)));
  EXPECT_EQ(index.GetSpeculativeStats().confirmed, 2u);
}

TEST_F(SpeculativeTest, EntryPastItsDeadlineIsNeverNamedAndCountsAsExpired) {
  Route(kA, Tokens(4), absl::Milliseconds(100));
  now_ += absl::Milliseconds(99);
  EXPECT_THAT(Runs(Match(Tokens(4))), ElementsAre(Pair(kA, 2u)));
  now_ += absl::Milliseconds(1);  // at the deadline: gone, purged or not
  EXPECT_THAT(Runs(Match(Tokens(4))), IsEmpty());
  now_ += absl::Hours(1);
  EXPECT_THAT(Runs(Match(Tokens(4))), IsEmpty());
  const SpeculativeStats stats = index_.GetSpeculativeStats();
  EXPECT_EQ(stats.entries, 0u);
  EXPECT_EQ(stats.expired, 2u);
  // A late BlockStored is a plain block, not a confirmation.
  (void)index_.Apply(kA, kModel, Batch({StoredBlocks(0, 2)}));
  EXPECT_EQ(index_.GetSpeculativeStats().confirmed, 0u);
}

TEST_F(SpeculativeTest, RefreshExtendsTheDeadline) {
  Route(kA, Tokens(4), absl::Milliseconds(100));
  now_ += absl::Milliseconds(80);
  Route(kA, Tokens(4), absl::Milliseconds(100));
  now_ += absl::Milliseconds(80);
  EXPECT_THAT(Runs(Match(Tokens(4))), ElementsAre(Pair(kA, 2u)));
  now_ += absl::Milliseconds(20);
  EXPECT_THAT(Runs(Match(Tokens(4))), IsEmpty());
}

TEST_F(SpeculativeTest, AllBlocksClearedDropsTheWorkersEntries) {
  Route(kA, Tokens(6));
  Route(kB, Tokens(6));
  (void)index_.Apply(kA, kModel, Batch({AllBlocksCleared{}}));
  EXPECT_THAT(Runs(Match(Tokens(6))), ElementsAre(Pair(kB, 3u)));
  EXPECT_EQ(index_.GetSpeculativeStats().dropped, 3u);
}

TEST_F(SpeculativeTest, EngineRestartDropsTheWorkersEntries) {
  (void)index_.Apply(kA, kModel, Batch({StoredBlocks(0, 1)}));
  Route(kA, Tokens(6));
  index_.ClearWorker(kA);  // what ingestion does when the seq goes backwards
  EXPECT_THAT(Runs(Match(Tokens(6))), IsEmpty());
  EXPECT_EQ(index_.GetSpeculativeStats().dropped, 2u);
}

TEST_F(SpeculativeTest, RemovedWorkerAndPodLoseTheirEntries) {
  Route(kA, Tokens(6));
  Route(kB, Tokens(6));
  index_.RemoveWorker(kA);
  index_.RemovePod("ns/b");
  EXPECT_THAT(Runs(Match(Tokens(6))), IsEmpty());
  const SpeculativeStats stats = index_.GetSpeculativeStats();
  EXPECT_EQ(stats.entries, 0u);
  EXPECT_EQ(stats.dropped, 6u);
}

TEST_F(SpeculativeTest, BlockStoredThenRemovedInOneBatchLeavesNothing) {
  Route(kA, Tokens(4));
  BlockRemoved removed;
  removed.block_hashes = {101};
  (void)index_.Apply(kA, kModel, Batch({StoredBlocks(0, 2), removed}));
  const MatchResult r = Match(Tokens(4));
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_EQ(r.workers[0].matched_blocks, 1u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 1u)));
  EXPECT_EQ(index_.GetSpeculativeStats().entries, 0u);
}

TEST_F(SpeculativeTest, WeightZeroIgnoresSpeculativeEntries) {
  (void)index_.Apply(kA, kModel, Batch({StoredBlocks(0, 1)}));
  Route(kA, Tokens(8));  // blocks 1-3 speculative on A
  Route(kB, Tokens(8));  // blocks 0-3 speculative on B
  MatchResult r = Match(Tokens(8), {{"SPECULATIVE", 0.0}});
  ASSERT_EQ(r.workers.size(), 1u);
  EXPECT_EQ(r.workers[0].worker, kA);
  EXPECT_EQ(r.workers[0].matched_blocks, 1u);
  EXPECT_THAT(r.workers[0].blocks_by_medium, ElementsAre(Pair("GPU", 1u)));

  r = Match(Tokens(8), {{"SPECULATIVE", 0.5}});
  ASSERT_EQ(r.workers.size(), 2u);
  EXPECT_EQ(r.workers[0].worker, kA);  // 1 + 3 * 0.5
  EXPECT_DOUBLE_EQ(r.workers[0].score, 2.5);
  EXPECT_EQ(r.workers[0].matched_blocks, 4u);
  EXPECT_EQ(r.workers[1].worker, kB);
  EXPECT_DOUBLE_EQ(r.workers[1].score, 2.0);
  EXPECT_EQ(r.workers[1].matched_blocks, 4u);
}

TEST_F(SpeculativeTest, CandidateFilterAppliesToSpeculativeHolders) {
  Route(kA, Tokens(4));
  Route(kB, Tokens(4));
  const std::vector<std::string> pods = {"ns/b"};
  auto r = index_.Match(MatchQuery{.model = "llama", .token_ids = Tokens(4), .pods = pods});
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(Runs(*r), ElementsAre(Pair(kB, 2u)));
}

TEST_F(SpeculativeTest, HashHintsMatchHashQueries) {
  const std::vector<uint32_t> tokens = Tokens(6);
  const std::vector<uint64_t> hashes = HashPrefix(ContextSeed("llama", "", 2), tokens, 2);
  RoutingHint hint{.worker = kA, .model = "llama", .block_hashes = hashes, .ttl = absl::Seconds(1)};
  ASSERT_TRUE(index_.RecordRouting(hint).ok());
  auto r = index_.Match(MatchQuery{.model = "llama", .block_hashes = hashes});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->workers.size(), 1u);
  EXPECT_EQ(r->workers[0].matched_blocks, 3u);
  EXPECT_EQ(r->workers[0].matched_tokens, 6u);  // the hints' block size
  EXPECT_THAT(Runs(Match(tokens)), ElementsAre(Pair(kA, 3u)));
}

TEST_F(SpeculativeTest, HintsUseTheModelsBlockSizeOnceAnEventShowedIt) {
  IndexOptions o = WithClock(Options());
  o.speculative.default_block_size = 16;
  PrefixIndex index(o);
  EXPECT_EQ(Route(kA, Tokens(40), absl::Seconds(1), &index).blocks, 2u);  // 16 tokens a block
  (void)index.Apply(kB, kModel, Batch({StoredBlocks(0, 1)}));              // the model's blocks are 2 tokens
  const WorkerKey c{"ns/c", 0};
  EXPECT_EQ(Route(c, Tokens(40), absl::Seconds(1), &index).blocks, 20u);
  const MatchResult r = Match(Tokens(40), {}, &index);
  EXPECT_THAT(Runs(r), ElementsAre(Pair(c, 20u), Pair(kA, 2u), Pair(kB, 1u)));
}

TEST_F(SpeculativeTest, InvalidHintsAreRefusedAsMatchIs) {
  EXPECT_EQ(index_.RecordRouting(RoutingHint{.worker = kA, .token_ids = Tokens(4)}).status(),
            absl::InvalidArgumentError("model is required"));
  EXPECT_EQ(index_.RecordRouting(RoutingHint{.worker = kA, .model = "llama"}).status(),
            absl::InvalidArgumentError("exactly one of token_ids and block_hashes must be given"));
}

TEST_F(SpeculativeTest, ReplicasGivenTheSameCallsAnswerTheSame) {
  PrefixIndex replica(WithClock(Options()));
  for (PrefixIndex* index : {&index_, &replica}) {
    (void)index->Apply(kA, kModel, Batch({StoredBlocks(0, 2)}));
    Route(kA, Tokens(12), absl::Milliseconds(500), index);
    Route(kB, Tokens(8), absl::Milliseconds(200), index);
  }
  now_ += absl::Milliseconds(100);
  for (PrefixIndex* index : {&index_, &replica}) (void)index->Apply(kA, kModel, Batch({StoredBlocks(2, 2)}));
  for (absl::Duration step : {absl::ZeroDuration(), absl::Milliseconds(150), absl::Milliseconds(400)}) {
    now_ += step;
    for (uint32_t n : {2u, 6u, 12u}) {
      const MatchResult a = Match(Tokens(n), {}, &index_), b = Match(Tokens(n), {}, &replica);
      ASSERT_EQ(a.workers.size(), b.workers.size());
      for (size_t i = 0; i < a.workers.size(); ++i) {
        EXPECT_EQ(a.workers[i].worker, b.workers[i].worker);
        EXPECT_EQ(a.workers[i].matched_blocks, b.workers[i].matched_blocks);
        EXPECT_EQ(a.workers[i].blocks_by_medium, b.workers[i].blocks_by_medium);
        EXPECT_EQ(a.workers[i].score, b.workers[i].score);
      }
    }
  }
}

class SpeculativeCapTest : public SpeculativeTest {
 protected:
  SpeculativeCapTest() : SpeculativeTest(Options(/*max_entries=*/4)) {}
};

TEST_F(SpeculativeCapTest, OldestEntriesAreEvictedBeyondTheCap) {
  Route(kA, Tokens(6));
  Route(kB, Tokens(6, 101));
  EXPECT_THAT(Runs(Match(Tokens(6))), IsEmpty());  // A's blocks 0 and 1 went first
  EXPECT_THAT(Runs(Match(Tokens(6, 101))), ElementsAre(Pair(kB, 3u)));
  const SpeculativeStats stats = index_.GetSpeculativeStats();
  EXPECT_EQ(stats.entries, 4u);
  EXPECT_EQ(stats.dropped, 2u);
}

TEST_F(SpeculativeCapTest, PodsWithoutEventsKeepHintsUntilEvictedLeastRecentlyRoutedFirst) {
  const std::optional<absl::Duration> forever = absl::InfiniteDuration();
  Route(kA, Tokens(4), forever);
  Route(kB, Tokens(4, 101), forever);
  now_ += absl::Hours(24);
  EXPECT_THAT(Runs(Match(Tokens(4))), ElementsAre(Pair(kA, 2u)));
  Route(kA, Tokens(4), forever);  // A routed again: B's entries are now the least recent
  const WorkerKey c{"ns/c", 0};
  Route(c, Tokens(4, 201), forever);
  EXPECT_THAT(Runs(Match(Tokens(4))), ElementsAre(Pair(kA, 2u)));
  EXPECT_THAT(Runs(Match(Tokens(4, 101))), IsEmpty());
  EXPECT_THAT(Runs(Match(Tokens(4, 201))), ElementsAre(Pair(c, 2u)));
  EXPECT_EQ(index_.GetSpeculativeStats().expired, 0u);
}

// Confirms `n` hints of `worker`, each `latency` after it was recorded.
void ConfirmHints(SpeculativeTest& t, PrefixIndex& index, absl::Time& now, const WorkerKey& worker, int n,
                  absl::Duration latency) {
  for (int i = 0; i < n; ++i) {
    index.ClearWorker(worker);  // the next hint is fresh (not held)
    RoutingHint hint{.worker = worker, .model = "llama", .token_ids = {}, .ttl = std::nullopt};
    const std::vector<uint32_t> tokens = Tokens(2);
    hint.token_ids = tokens;
    ASSERT_TRUE(index.RecordRouting(hint).ok());
    now += latency;
    (void)index.Apply(worker, kModel, Batch({StoredBlocks(0, 1)}));
  }
  (void)t;
}

TEST_F(SpeculativeTest, AdaptiveTtlFollowsEachEnginesConfirmationLatency) {
  const WorkerKey slow = kA, fast = kB;
  EXPECT_EQ(index_.GetWorkerStats(slow), std::nullopt);
  // Before enough confirmations: --speculative_ttl.
  EXPECT_EQ(Route(slow, Tokens(2), std::nullopt).ttl, absl::Seconds(2));
  ConfirmHints(*this, index_, now_, slow, 8, absl::Milliseconds(1500));
  ConfirmHints(*this, index_, now_, fast, 8, absl::Milliseconds(40));
  // 2 x the 95th percentile: 3 s for the slow engine; the fast one's 80 ms is raised to the minimum.
  EXPECT_EQ(index_.GetWorkerStats(slow)->speculative_ttl, absl::Seconds(3));
  EXPECT_EQ(index_.GetWorkerStats(fast)->speculative_ttl, absl::Milliseconds(200));
  index_.ClearWorker(slow);
  EXPECT_EQ(Route(slow, Tokens(2), std::nullopt).ttl, absl::Seconds(3));
  // The engine slows down further: clamped to the maximum.
  ConfirmHints(*this, index_, now_, fast, 64, absl::Seconds(20));
  EXPECT_EQ(index_.GetWorkerStats(fast)->speculative_ttl, absl::Seconds(30));
}

TEST_F(SpeculativeTest, TtlGrowsWhenConfirmationsArriveAfterItExpired) {
  ConfirmHints(*this, index_, now_, kA, 8, absl::Milliseconds(10));
  ASSERT_EQ(index_.GetWorkerStats(kA)->speculative_ttl, absl::Milliseconds(200));
  // The engine slows down to 1 s: the first entries expire (and are purged)
  // before it confirms them, yet each late confirmation is a sample, until
  // the TTL covers the engine again.
  for (uint32_t i = 0; i < 64; ++i) {
    const std::vector<uint32_t> tokens = Tokens(2, 1000 + 2 * i);
    EXPECT_EQ(Route(kA, tokens, std::nullopt).blocks, 1u);
    now_ += absl::Seconds(1);
    if (i == 0) {
      EXPECT_THAT(Runs(Match(tokens)), IsEmpty());
    }
    (void)index_.GetSpeculativeStats();  // purges
    BlockStored stored;
    stored.block_hashes = {5000 + i};
    stored.token_ids = tokens;
    stored.block_size = 2;
    (void)index_.Apply(kA, kModel, Batch({stored}));
  }
  EXPECT_EQ(index_.GetWorkerStats(kA)->speculative_ttl, absl::Seconds(2));
  const SpeculativeStats stats = index_.GetSpeculativeStats();
  EXPECT_GT(stats.expired, 0u);
  EXPECT_GT(stats.confirmed, 8u + 32u);
}

}  // namespace
}  // namespace kvindex
