// End to end: simulated engines publish over real ZeroMQ; a follower written
// here (SUB + DEALER, sequencing, replay) decodes every batch with kvindex's
// decoder and applies it to a kvindex PrefixIndex; the index must then agree
// exactly with the ground truth the simulator reports.

#include "tools/sim/sim_engine.h"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "core/events/event_decoder.h"
#include "core/index/prefix_index.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/wait.h"
#include "tests/tools/zmq_test_util.h"
#include "tools/sim/ground_truth.h"
#include "tools/sim/sim_runner.h"
#include "tools/sim/truth_writer.h"

namespace kvindex::sim {
namespace {

using ::kvindex::sim::testing::Frames;
using ::kvindex::sim::testing::Recv;
using ::kvindex::sim::testing::Replay;
using ::kvindex::sim::testing::SeqOf;
using ::kvindex::testutil::WaitFor;
using ::testing::SizeIs;

constexpr char kModel[] = "m";

// Follows one engine like kvindex's subscriber must: applies seq last+1 only,
// fills gaps from the replay socket, drops duplicates, and treats the live
// stream's seq going backwards as a restart (live messages arrive in order; a
// live message older than what replay already applied is a duplicate).
class Follower {
 public:
  Follower(zmq::context_t& context, SimEngine& engine, PrefixIndex& index, std::function<void()> serve)
      : engine_(engine),
        index_(index),
        serve_(std::move(serve)),
        worker_{engine.pod_key(), engine.options().dp_rank},
        sub_(testing::Sub(context, engine.events_port())),
        dealer_(testing::Dealer(context, *engine.replay_port())) {}

  // Receives and applies until the index has every batch up to the engine's last seq.
  void CatchUp() {
    const int64_t target = engine_.Truth().last_seq;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    auto quiet_since = std::chrono::steady_clock::now();
    while (last_ != target) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "stuck at seq " << last_ << " of " << target;
      if (auto frames = Recv(sub_, std::chrono::milliseconds(10))) {
        OnLive(*frames);
        quiet_since = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - quiet_since > std::chrono::milliseconds(100)) {
        Fill();  // lost while the SUB was joining
        quiet_since = std::chrono::steady_clock::now();
      }
    }
  }

  const WorkerKey& worker() const { return worker_; }
  uint64_t restarts_seen() const { return restarts_seen_; }
  uint64_t live_batches() const { return live_; }
  uint64_t replayed_batches() const { return replayed_; }

 private:
  void OnLive(const Frames& frames) {
    ASSERT_THAT(frames, SizeIs(3));
    EXPECT_EQ(frames[0], engine_.options().publisher.topic);
    const std::optional<uint64_t> seq = SeqOf(frames[1]);
    ASSERT_TRUE(seq.has_value());
    if (last_live_ >= 0 && static_cast<int64_t>(*seq) <= last_live_) {
      index_.ClearWorker(worker_);
      last_ = -1;
      ++restarts_seen_;
    }
    last_live_ = static_cast<int64_t>(*seq);
    if (static_cast<int64_t>(*seq) > last_ + 1) Fill();
    if (static_cast<int64_t>(*seq) == last_ + 1) {
      Apply(frames[2]);
      last_ = static_cast<int64_t>(*seq);
      ++live_;
    }
  }

  // Replays from last + 1, applying in order and dropping duplicates.
  void Fill() {
    const auto replies = Replay(dealer_, static_cast<uint64_t>(last_ + 1), serve_);
    ASSERT_FALSE(replies.empty()) << "no end marker";
    const size_t seq_at = engine_.options().publisher.reply_form == ReplyForm::kSeqPayload ? 1 : 2;
    for (size_t i = 0; i + 1 < replies.size(); ++i) {
      ASSERT_THAT(replies[i], SizeIs(seq_at + 2));
      const int64_t seq = static_cast<int64_t>(*SeqOf(replies[i][seq_at]));
      ASSERT_LE(seq, last_ + 1) << "gap fell out of the replay buffer";
      if (seq <= last_) continue;
      Apply(replies[i][seq_at + 1]);
      last_ = seq;
      ++replayed_;
    }
    EXPECT_THAT(replies.back(), SizeIs(seq_at + 2));
  }

  void Apply(const std::string& payload) {
    absl::StatusOr<EventBatch> batch = DecodeEventBatch(payload);
    ASSERT_TRUE(batch.ok()) << batch.status();
    EXPECT_EQ(batch->dp_rank, engine_.options().dp_rank);
    EXPECT_EQ(batch->skipped_events, 0u);
    const ApplyResult r = index_.Apply(worker_, WorkerContext{kModel, ""}, *batch);
    EXPECT_EQ(r.unresolved_parents, 0u);
    EXPECT_EQ(r.unknown_removals, 0u);
  }

  SimEngine& engine_;
  PrefixIndex& index_;
  const std::function<void()> serve_;
  const WorkerKey worker_;
  zmq::socket_t sub_;
  zmq::socket_t dealer_;
  int64_t last_ = -1;       // last seq applied
  int64_t last_live_ = -1;  // last seq received live
  uint64_t restarts_seen_ = 0;
  uint64_t live_ = 0;
  uint64_t replayed_ = 0;
};

SimEngineOptions Engine(size_t index, PayloadLayout layout, HashEncoding hashes, uint32_t block_size, size_t gpu,
                        size_t cpu) {
  SimEngineOptions o;
  o.pod_name = "sim-" + std::to_string(index);
  o.layout = layout;
  o.hashes = hashes;
  o.rebind_on_restart = false;  // no messages lost to reconnection: the test sees every restart
  o.workload.seed = 5;
  o.workload.stream = index;
  o.workload.system_prompts = 2;
  o.workload.system_prompt_tokens = 24;
  o.workload.conversations = 4;
  o.workload.turn_tokens = 12;
  o.workload.max_turns = 4;
  o.workload.vocab_size = 64;
  o.cache.block_size = block_size;
  o.cache.gpu_capacity_blocks = gpu;
  o.cache.cpu_capacity_blocks = cpu;
  o.cache.salt = 1000 + index;
  o.cache.model = kModel;
  return o;
}

std::vector<SimEngineOptions> ThreeEngines() {
  std::vector<SimEngineOptions> out;
  out.push_back(Engine(0, PayloadLayout::kMap, HashEncoding::kInt, 4, 64, 0));
  out.push_back(Engine(1, PayloadLayout::kArray, HashEncoding::kBytes, 4, 48, 32));
  out.back().publisher.reply_form = ReplyForm::kTopicSeqPayload;
  out.back().publisher.topic = "kv@127.0.0.1@m";
  out.back().cache.one_removal_per_event = true;
  out.back().clear_event_on_restart = true;
  out.back().requests_per_batch = 3;
  out.push_back(Engine(2, PayloadLayout::kSglang, HashEncoding::kInt, 8, 40, 16));
  out.back().dp_rank = 1;
  out.back().requests_per_batch = 2;
  return out;
}

uint64_t ParseHex(const nlohmann::json& j) { return std::stoull(j.get<std::string>(), nullptr, 16); }

// The index agrees with the truth documents TruthWriter produces: every held
// chain (rebuilt from the JSON) matches in full on its worker, per-medium
// counts agree, blocks held earlier match only as far as they are still held,
// and Match of every sample prompt gives exactly the expected workers.
void ExpectIndexAgrees(const PrefixIndex& index, TruthWriter& writer, absl::Span<SimEngine* const> engines,
                       std::vector<std::vector<uint64_t>>& old_chains) {
  const TruthWriter::Documents docs = writer.Snapshot(engines);
  absl::flat_hash_set<std::string> held_by_anyone;
  std::vector<std::vector<uint64_t>> chains_now;
  size_t workers = 0;
  for (const auto& pod : docs.truth["pods"]) {
    for (const auto& w : pod["workers"]) {
      ++workers;
      const WorkerKey key{pod["key"].get<std::string>(), w["dp_rank"].get<uint32_t>()};
      std::vector<HeldBlock> held;
      uint64_t gpu = 0, cpu = 0;
      for (const auto& b : w["held"]) {
        HeldBlock h;
        h.index_hash = ParseHex(b["hash"]);
        if (!b["parent"].is_null()) h.parent_index_hash = ParseHex(b["parent"]);
        h.depth = b["depth"].get<uint32_t>();
        for (const auto& m : b["media"]) {
          (m == "GPU" ? gpu : cpu) += 1;
        }
        held.push_back(h);
      }
      const auto stats = index.GetWorkerStats(key);
      if (held.empty() && !stats.has_value()) continue;
      ASSERT_TRUE(stats.has_value()) << WorkerKeyString(key);
      EXPECT_EQ(stats->blocks, held.size()) << WorkerKeyString(key);
      EXPECT_EQ(w["blocks"].get<uint64_t>(), held.size());
      EXPECT_EQ(w["gpu_blocks"].get<uint64_t>(), gpu);
      EXPECT_EQ(w["cpu_blocks"].get<uint64_t>(), cpu);
      uint64_t index_gpu = 0, index_cpu = 0;
      for (const auto& [medium, n] : stats->blocks_by_medium) (medium == "GPU" ? index_gpu : index_cpu) += n;
      EXPECT_EQ(index_gpu, gpu) << WorkerKeyString(key);
      EXPECT_EQ(index_cpu, cpu) << WorkerKeyString(key);
      for (const auto& chain : LeafChains(held)) {
        const MatchQuery q{.model = kModel, .block_hashes = chain};
        auto m = index.Match(q);
        ASSERT_TRUE(m.ok());
        bool found = false;
        for (const WorkerMatch& wm : m->workers) {
          if (wm.worker == key) {
            found = true;
            EXPECT_EQ(wm.matched_blocks, chain.size()) << WorkerKeyString(key);
          }
        }
        EXPECT_TRUE(found) << WorkerKeyString(key);
        chains_now.push_back(chain);
      }
      for (const HeldBlock& h : held) held_by_anyone.insert(WorkerKeyString(key) + "/" + std::to_string(h.index_hash));
    }
  }
  EXPECT_EQ(workers, engines.size());

  // Blocks no longer held do not match.
  for (const auto& chain : old_chains) {
    auto m = index.Match(MatchQuery{.model = kModel, .block_hashes = chain});
    ASSERT_TRUE(m.ok());
    for (const WorkerMatch& wm : m->workers) {
      size_t still = 0;
      while (still < chain.size() &&
             held_by_anyone.contains(WorkerKeyString(wm.worker) + "/" + std::to_string(chain[still]))) {
        ++still;
      }
      EXPECT_EQ(wm.matched_blocks, still) << WorkerKeyString(wm.worker);
    }
  }
  old_chains = std::move(chains_now);

  size_t nonempty = 0;
  for (const auto& p : docs.prompts["prompts"]) {
    const auto tokens = p["tokens"].get<std::vector<uint32_t>>();
    auto m = index.Match(MatchQuery{.model = kModel, .token_ids = tokens});
    ASSERT_TRUE(m.ok());
    std::vector<std::tuple<std::string, uint32_t, uint32_t>> got, want;
    for (const WorkerMatch& wm : m->workers) got.emplace_back(wm.worker.pod, wm.worker.dp_rank, wm.matched_blocks);
    for (const auto& e : p["expected"]) {
      want.emplace_back(e["pod"].get<std::string>(), e["dp_rank"].get<uint32_t>(),
                        e["matched_blocks"].get<uint32_t>());
    }
    EXPECT_THAT(got, ::testing::UnorderedElementsAreArray(want)) << p["label"];
    if (!want.empty()) ++nonempty;
    if (p["label"] == "novel") {
      EXPECT_TRUE(want.empty());
    }
  }
  EXPECT_GT(nonempty, 0u);
}

TEST(SimEngineTest, IndexFedOverZeroMqAgreesWithGroundTruthThroughEvictionsAndRestarts) {
  zmq::context_t context;
  std::vector<std::unique_ptr<SimEngine>> engines;
  std::vector<SimEngine*> ptrs;
  for (const SimEngineOptions& o : ThreeEngines()) {
    auto e = SimEngine::Create(context, o);
    ASSERT_TRUE(e.ok()) << e.status();
    engines.push_back(*std::move(e));
    ptrs.push_back(engines.back().get());
  }
  // Published before anyone subscribes: the followers must get these through replay.
  for (auto& e : engines) ASSERT_TRUE(e->Step(5).ok());
  PrefixIndex index;
  std::vector<std::unique_ptr<Follower>> followers;
  for (auto& e : engines) {
    SimEngine* engine = e.get();
    followers.push_back(std::make_unique<Follower>(context, *engine, index, [engine] {
      ASSERT_TRUE(engine->ServeReplay().ok());
    }));
  }
  TruthWriter writer({.seed = 3, .conversations_per_engine = 2});
  std::vector<std::vector<uint64_t>> old_chains;
  for (int round = 1; round <= 120; ++round) {
    for (auto& e : engines) ASSERT_TRUE(e->Step(1).ok());
    if (round == 50) {
      ASSERT_TRUE(engines[0]->Restart().ok());
      ASSERT_TRUE(engines[1]->Restart().ok());
    }
    if (round % 15 == 0) {
      for (auto& f : followers) {
        f->CatchUp();
        if (::testing::Test::HasFatalFailure()) return;
      }
      ExpectIndexAgrees(index, writer, ptrs, old_chains);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  EXPECT_EQ(followers[0]->restarts_seen(), 1u);
  EXPECT_EQ(followers[1]->restarts_seen(), 1u);
  EXPECT_EQ(followers[2]->restarts_seen(), 0u);
  for (auto& f : followers) {
    EXPECT_GT(f->live_batches(), 0u);
    EXPECT_GT(f->replayed_batches(), 0u);  // at least what was sent before the SUB existed
  }
  const EngineCounters c = engines[1]->counters();
  EXPECT_EQ(c.restarts, 1u);
  EXPECT_GT(c.cache.offloaded_blocks, 0u);
  EXPECT_GT(c.cache.removed_cpu, 0u);
  EXPECT_GT(engines[0]->counters().cache.removed_gpu, 0u);
}

TEST(SimEngineTest, RestartWithClearEventPublishesAllBlocksClearedAsBatchZero) {
  zmq::context_t context;
  SimEngineOptions o = Engine(0, PayloadLayout::kMap, HashEncoding::kInt, 4, 64, 0);
  o.clear_event_on_restart = true;
  auto engine = SimEngine::Create(context, o);
  ASSERT_TRUE(engine.ok());
  ASSERT_TRUE((*engine)->Step(3).ok());
  EXPECT_EQ((*engine)->Truth().last_seq, 2);
  ASSERT_TRUE((*engine)->Restart().ok());
  EXPECT_EQ((*engine)->Truth().last_seq, 0);
  EXPECT_TRUE((*engine)->Truth().blocks.empty());
  auto dealer = testing::Dealer(context, *(*engine)->replay_port());
  auto replies = Replay(dealer, 0, [&] { ASSERT_TRUE((*engine)->ServeReplay().ok()); });
  ASSERT_THAT(replies, SizeIs(2));
  auto batch = DecodeEventBatch(replies[0][2]);
  ASSERT_TRUE(batch.ok());
  ASSERT_THAT(batch->events, SizeIs(1));
  EXPECT_TRUE(std::holds_alternative<AllBlocksCleared>(batch->events[0]));
}

// Engines at rest sample the same prompts at every write: a run's final
// truth does not depend on how many times it was written before.
TEST(SimEngineTest, TheTruthOfEnginesAtRestSamplesTheSamePrompts) {
  zmq::context_t context;
  auto engine = SimEngine::Create(context, Engine(0, PayloadLayout::kMap, HashEncoding::kInt, 4, 64, 0));
  ASSERT_TRUE(engine.ok());
  ASSERT_TRUE((*engine)->Step(20).ok());
  SimEngine* engines[] = {engine->get()};
  TruthWriter writer({.seed = 3, .conversations_per_engine = 2});
  const nlohmann::json first = writer.Snapshot(engines).prompts["prompts"];
  EXPECT_EQ(writer.Snapshot(engines).prompts["prompts"], first);
  ASSERT_TRUE((*engine)->Step(1).ok());
  EXPECT_NE(writer.Snapshot(engines).prompts["prompts"], first);  // fresh turns, sampled anew
}

TEST(SimEngineTest, RequestsPerBatchGroupsPromptsIntoOneMessage) {
  zmq::context_t context;
  SimEngineOptions o = Engine(0, PayloadLayout::kMap, HashEncoding::kInt, 4, 1000, 0);
  o.requests_per_batch = 8;
  o.workload.system_prompts = 0;
  o.workload.max_turns = 1;
  o.workload.turn_tokens = 64;
  auto engine = SimEngine::Create(context, o);
  ASSERT_TRUE(engine.ok());
  ASSERT_TRUE((*engine)->Step(20).ok());
  const EngineCounters c = (*engine)->counters();
  EXPECT_EQ(c.requests, 20u);
  EXPECT_EQ(c.batches, 3u);  // 8 + 8 + 4
  EXPECT_EQ(c.events, 20u);  // one multi-block BlockStored per prompt
  EXPECT_GE(c.cache.stored_blocks, 20u * 8);
}

// Gateway mode's engine: a prompt is served (and counted as cached) at once,
// its events go out only when due, in the order served.
TEST(SimEngineTest, ServeLaterHoldsTheEventsUntilTheyAreDue) {
  zmq::context_t context;
  auto engine = SimEngine::Create(context, Engine(0, PayloadLayout::kMap, HashEncoding::kInt, 4, 1000, 0));
  ASSERT_TRUE(engine.ok());
  SimEngine& e = **engine;
  const std::vector<uint32_t> first = {1, 2, 3, 4, 5, 6, 7, 8, 9};  // two full blocks of 4
  const std::vector<uint32_t> second = {1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13};
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(e.ServeLater(first, t0 + absl::Seconds(10)), 0u);
  EXPECT_EQ(e.CachedBlocks(second), 2u);  // served: the cache has it before the wire does
  EXPECT_EQ(e.ServeLater(second, t0 + absl::Seconds(5)), 2u);  // due earlier, still after the first
  EXPECT_EQ(e.NextDue(), t0 + absl::Seconds(10));
  EXPECT_EQ(e.counters().requests, 2u);

  ASSERT_TRUE(e.PublishDue(t0 + absl::Seconds(9)).ok());
  EXPECT_EQ(e.Truth().last_seq, -1);  // nothing published yet
  ASSERT_TRUE(e.PublishDue(t0 + absl::Seconds(10)).ok());
  EXPECT_EQ(e.Truth().last_seq, 1);  // both, in the order served
  EXPECT_EQ(e.NextDue(), absl::InfiniteFuture());
  auto dealer = testing::Dealer(context, *e.replay_port());
  auto replies = Replay(dealer, 0, [&] { ASSERT_TRUE(e.ServeReplay().ok()); });
  ASSERT_THAT(replies, SizeIs(3));  // two batches and the end marker
  auto batch = DecodeEventBatch(replies[1][2]);
  ASSERT_TRUE(batch.ok());
  ASSERT_THAT(batch->events, SizeIs(1));
  ASSERT_TRUE(std::holds_alternative<BlockStored>(batch->events[0]));
  EXPECT_THAT(std::get<BlockStored>(batch->events[0]).block_hashes, SizeIs(1));  // only the new block
}

// The runner's threads serve traffic and replay; a follower catches up through them.
TEST(SimRunnerTest, RunnerThreadsPublishAndServeReplay) {
  zmq::context_t context;
  std::vector<std::unique_ptr<SimEngine>> engines;
  std::vector<SimEngine*> ptrs;
  for (const SimEngineOptions& o : ThreeEngines()) {
    auto e = SimEngine::Create(context, o);
    ASSERT_TRUE(e.ok()) << e.status();
    engines.push_back(*std::move(e));
    ptrs.push_back(engines.back().get());
  }
  PrefixIndex index;
  std::vector<std::unique_ptr<Follower>> followers;
  for (SimEngine* e : ptrs) followers.push_back(std::make_unique<Follower>(context, *e, index, [] {}));
  RunnerOptions ro;
  ro.rate = 0;
  ro.max_requests = 150;
  ro.threads = 2;
  SimRunner runner(ptrs, ro);
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.TrafficDone(); }, absl::Seconds(10), absl::Milliseconds(5)));
  for (auto& f : followers) {
    f->CatchUp();
    if (::testing::Test::HasFatalFailure()) return;
  }
  TruthWriter writer({});
  std::vector<std::vector<uint64_t>> old_chains;
  ExpectIndexAgrees(index, writer, ptrs, old_chains);
  runner.Stop();
  EXPECT_TRUE(runner.status().ok()) << runner.status();
  for (SimEngine* e : ptrs) EXPECT_EQ(e->counters().requests, 150u);
}

// Returns once the runner thread serving the engine behind `replay` has gone
// through its whole loop (traffic, then replay) at least once since the call:
// two replay requests (for nothing: only the end marker comes back), each
// answered by a later pass.
void LetTheRunnerLoop(zmq::socket_t& replay) {
  for (int i = 0; i < 2; ++i) {
    ASSERT_THAT(Replay(replay, ~uint64_t{0} - 1, [] {}), ::testing::Not(::testing::IsEmpty()));
  }
}

// The schedule, by counts rather than by a clock: an engine's first request
// goes out at its start and the next one 1/rate later; engine i of N starts
// i/N of an interval late. At 0.001 requests/s the next request is 1000 s
// away, so however long the runner loops, engine 0 has sent exactly one and
// engine 1 (500 s late) none.
TEST(SimRunnerTest, RateHoldsBackRequestsNotYetDue) {
  for (const bool stagger : {true, false}) {
    SCOPED_TRACE(stagger ? "staggered" : "lockstep");
    zmq::context_t context;
    auto first = SimEngine::Create(context, Engine(0, PayloadLayout::kMap, HashEncoding::kInt, 4, 64, 0));
    auto second = SimEngine::Create(context, Engine(1, PayloadLayout::kMap, HashEncoding::kInt, 4, 64, 0));
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(second.ok()) << second.status();
    zmq::socket_t replay = testing::Dealer(context, *(*first)->replay_port());
    RunnerOptions ro;
    ro.rate = 0.001;
    ro.stagger = stagger;
    SimRunner runner({first->get(), second->get()}, ro);
    runner.Start();
    ASSERT_TRUE(WaitFor([&] { return (*first)->counters().requests >= 1; }));
    if (!stagger) {
      ASSERT_TRUE(WaitFor([&] { return (*second)->counters().requests >= 1; }));
    }
    for (int i = 0; i < 5; ++i) {
      LetTheRunnerLoop(replay);
      if (::testing::Test::HasFatalFailure()) return;
      EXPECT_EQ((*first)->counters().requests, 1u);
      EXPECT_EQ((*second)->counters().requests, stagger ? 0u : 1u);
    }
    EXPECT_FALSE(runner.TrafficDone());
    runner.Stop();
    EXPECT_TRUE(runner.status().ok()) << runner.status();
  }
}

// --duration ends the traffic of a runner with no request limit: TrafficDone()
// comes, and no request goes out after it although, as fast as possible, one
// would be due on every pass of the loop.
TEST(SimRunnerTest, DurationEndsTraffic) {
  zmq::context_t context;
  auto engine = SimEngine::Create(context, Engine(0, PayloadLayout::kMap, HashEncoding::kInt, 4, 64, 0));
  ASSERT_TRUE(engine.ok()) << engine.status();
  zmq::socket_t replay = testing::Dealer(context, *(*engine)->replay_port());
  RunnerOptions ro;
  ro.rate = 0;
  ro.duration = absl::Milliseconds(100);
  SimRunner runner({engine->get()}, ro);
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.TrafficDone(); }));
  const uint64_t requests = (*engine)->counters().requests;
  for (int i = 0; i < 5; ++i) {
    LetTheRunnerLoop(replay);
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_EQ((*engine)->counters().requests, requests);
  }
  runner.Stop();
  EXPECT_TRUE(runner.status().ok()) << runner.status();
  EXPECT_EQ((*engine)->counters().requests, requests);
}

}  // namespace
}  // namespace kvindex::sim
