// PrefixIndex::ExportWorker / ImportWorker: an index rebuilt from its workers'
// snapshots answers every Match exactly as the original, and goes on
// answering the same once both apply the same later batches (the rebuilt
// workers keep what later events need: parents (offloaded chunks' predecessors,
// eviction order), chunk sizes, groups, aliases, contexts).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/index/block_hash.h"
#include "core/index/prefix_index.h"
#include "core/index/worker_snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

const WorkerContext kLlama{"llama", ""};
const WorkerContext kLlamaLora{"llama", "ad1"};

// Prompt p: a shared system part (tokens 1..16) then 24 tokens of its own.
std::vector<uint32_t> Prompt(uint32_t p) {
  std::vector<uint32_t> t;
  for (uint32_t i = 0; i < 16; ++i) t.push_back(i + 1);
  for (uint32_t i = 0; i < 24; ++i) t.push_back(1000 * (p + 1) + i);
  return t;
}

// Engine hashes of a worker (salted: workers report different hashes for the same tokens).
std::vector<uint64_t> EngineChain(uint64_t salt, const std::vector<uint32_t>& tokens, uint32_t bs) {
  std::vector<uint64_t> out;
  uint64_t h = salt;
  for (size_t i = 0; i + bs <= tokens.size(); i += bs) {
    h = HashBlock(h, absl::Span<const uint32_t>(tokens).subspan(i, bs));
    out.push_back(h);
  }
  return out;
}

// Blocks [first, first + n) of `tokens` stored as one event.
BlockStored Store(uint64_t salt, const std::vector<uint32_t>& tokens, uint32_t bs, size_t first, size_t n) {
  const std::vector<uint64_t> chain = EngineChain(salt, tokens, bs);
  BlockStored s;
  s.block_hashes.assign(chain.begin() + first, chain.begin() + first + n);
  if (first > 0) s.parent_block_hash = chain[first - 1];
  s.token_ids.assign(tokens.begin() + first * bs, tokens.begin() + (first + n) * bs);
  s.block_size = bs;
  return s;
}

EventBatch Batch(std::vector<Event> events, double ts = 1700000000.25) {
  EventBatch b;
  b.ts = ts;
  b.events = std::move(events);
  return b;
}

struct Worker {
  WorkerKey key;
  WorkerContext context;
  uint64_t salt;
  uint32_t bs;
};

const Worker kPlain{{"ns/plain", 0}, kLlama, 11, 4};
const Worker kLora{{"ns/lora", 1}, kLlamaLora, 12, 8};
const Worker kHybrid{{"ns/hybrid", 0}, kLlama, 13, 4};
const Worker kOffload{{"ns/offload", 0}, kLlama, 14, 4};
const Worker kCleared{{"ns/cleared", 0}, kLlama, 15, 4};

void ApplyAll(PrefixIndex& index, const Worker& w, std::vector<Event> events, uint64_t seq) {
  (void)index.Apply(w.key, w.context, Batch(std::move(events)), BatchCursor{seq, seq * 7 + 1, seq % 2 == 0});
}

// The first life of every worker: chains, a CPU tier, a remote tier, removals,
// a hybrid model's window group, offloaded chunks, a clear.
void FirstLife(PrefixIndex& index) {
  for (uint32_t p = 0; p < 4; ++p) ApplyAll(index, kPlain, {Store(kPlain.salt, Prompt(p), 4, 0, 10)}, p);
  {
    BlockStored cpu = Store(kPlain.salt, Prompt(0), 4, 0, 6);
    cpu.medium = "CPU";
    BlockStored remote = Store(kPlain.salt, Prompt(1), 4, 0, 3);
    remote.medium = "CPU";
    remote.locality = "REMOTE";
    BlockRemoved gone;
    gone.block_hashes = {EngineChain(kPlain.salt, Prompt(0), 4)[1], EngineChain(kPlain.salt, Prompt(3), 4)[9]};
    ApplyAll(index, kPlain, {cpu, remote, gone}, 4);
  }
  for (uint32_t p = 0; p < 3; ++p) {
    BlockStored s = Store(kLora.salt + 100, Prompt(p), 8, 0, 5);  // (the engine hashes the LoRA in)
    s.lora_name = "ad2";                                          // the event's LoRA wins over the pod's
    ApplyAll(index, kLora, {p == 1 ? Store(kLora.salt, Prompt(p), 8, 0, 5) : s}, p);
  }
  for (uint32_t p = 0; p < 3; ++p) {
    BlockStored full = Store(kHybrid.salt, Prompt(p), 4, 0, 10);
    full.group_idx = 0;
    full.kv_cache_spec_kind = "full_attention";
    BlockStored window = Store(kHybrid.salt, Prompt(p), 4, 7, 3);
    window.group_idx = 1;
    window.kv_cache_spec_kind = "sliding_window";
    window.kv_cache_spec_sliding_window = 8;
    ApplyAll(index, kHybrid, {full, window}, p);
  }
  for (uint32_t p = 0; p < 2; ++p) {
    const std::vector<uint64_t> chain = EngineChain(kOffload.salt, Prompt(p), 4);
    BlockStored chunk;
    chunk.block_hashes = {chain[3], chain[7]};
    chunk.block_size = 16;  // chunks of 4 blocks
    chunk.medium = "CPU";
    ApplyAll(index, kOffload, {Store(kOffload.salt, Prompt(p), 4, 0, 10), chunk}, p);
  }
  ApplyAll(index, kCleared, {Store(kCleared.salt, Prompt(0), 4, 0, 10)}, 0);
  ApplyAll(index, kCleared, {AllBlocksCleared{}, Store(kCleared.salt, Prompt(2), 4, 0, 6)}, 1);
}

// What later batches do to every worker: they must land the same on the original and the import.
void SecondLife(PrefixIndex& index) {
  ApplyAll(index, kPlain, {Store(kPlain.salt, Prompt(0), 4, 1, 1)}, 10);  // the removed block again
  {
    BlockRemoved cpu;
    cpu.block_hashes = {EngineChain(kPlain.salt, Prompt(0), 4)[5]};
    cpu.medium = "CPU";
    ApplyAll(index, kPlain, {cpu}, 11);
  }
  ApplyAll(index, kLora, {Store(kLora.salt, Prompt(3), 8, 0, 5)}, 10);
  {
    BlockRemoved window;
    window.block_hashes = {EngineChain(kHybrid.salt, Prompt(0), 4)[8]};
    window.group_idx = 1;
    ApplyAll(index, kHybrid, {window}, 10);
  }
  {
    // A chunk removal takes its predecessors off CPU: only the parents kept know them.
    BlockRemoved chunk;
    chunk.block_hashes = {EngineChain(kOffload.salt, Prompt(1), 4)[7]};
    chunk.medium = "CPU";
    BlockRemoved gpu;
    gpu.block_hashes = {EngineChain(kOffload.salt, Prompt(0), 4)[2]};
    ApplyAll(index, kOffload, {chunk, gpu}, 10);
  }
  ApplyAll(index, kCleared, {Store(kCleared.salt, Prompt(2), 4, 6, 4)}, 10);
}

std::string Render(const MatchResult& r) {
  std::string out = absl::StrCat("bs=", r.block_size, " q=", r.query_blocks);
  for (const WorkerMatch& m : r.workers) {
    absl::StrAppend(&out, " | ", WorkerKeyString(m.worker), " ", m.matched_blocks, "/", m.matched_tokens, "/",
                    m.block_size, " score=", m.score);
    std::vector<std::pair<std::string, uint32_t>> media(m.blocks_by_medium.begin(), m.blocks_by_medium.end());
    std::sort(media.begin(), media.end());
    for (const auto& [name, n] : media) absl::StrAppend(&out, " ", name, ":", n);
  }
  return out;
}

// Every Match the test asks, rendered: each prompt and each of its prefixes, per LoRA, with and without weights.
std::vector<std::string> Answers(const PrefixIndex& index) {
  std::vector<std::string> out;
  for (uint32_t p = 0; p < 5; ++p) {
    const std::vector<uint32_t> prompt = Prompt(p);
    for (size_t len = 4; len <= prompt.size(); len += 4) {
      const std::vector<uint32_t> tokens(prompt.begin(), prompt.begin() + len);
      for (std::string_view lora : {"", "ad1", "ad2"}) {
        for (bool weighted : {false, true}) {
          MatchQuery q{.model = "llama", .lora_name = lora, .token_ids = tokens};
          if (weighted) q.medium_weights = {{"GPU", 1.0}, {"CPU", 0.5}, {"CPU/REMOTE", 0.25}};
          absl::StatusOr<MatchResult> r = index.Match(q);
          out.push_back(r.ok() ? Render(*r) : r.status().ToString());
        }
      }
    }
  }
  return out;
}

// A snapshot with its blocks and parents sorted, and media bits replaced by names.
using NamedBlock = std::tuple<uint64_t, uint64_t, std::vector<std::string>>;
struct Normalized {
  std::vector<std::vector<NamedBlock>> groups;
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> parents;
  WorkerSnapshot rest;  // without blocks, parents and media
  bool operator==(const Normalized&) const = default;
};

Normalized Normalize(WorkerSnapshot s) {
  Normalized n;
  for (GroupSnapshot& g : s.groups) {
    std::vector<NamedBlock> blocks;
    for (const SnapshotBlock& b : g.blocks) {
      std::vector<std::string> names;
      for (int bit = 0; bit < kSnapshotMedia; ++bit) {
        if (b.media >> bit & 1) names.push_back(s.media[bit]);
      }
      std::sort(names.begin(), names.end());
      blocks.emplace_back(b.engine, b.index, names);
    }
    std::sort(blocks.begin(), blocks.end());
    n.groups.push_back(std::move(blocks));
    std::sort(g.parents.begin(), g.parents.end());
    n.parents.push_back(std::move(g.parents));
    std::array<std::pair<std::string, uint32_t>, kSnapshotMedia> chunks;
    for (int bit = 0; bit < kSnapshotMedia; ++bit) chunks[bit] = {s.media[bit], g.chunk_blocks[bit]};
    g.blocks.clear();
    g.parents.clear();
    g.chunk_blocks = {};
    // Chunk sizes by tier name, folded into the group's block list head for comparison.
    std::vector<NamedBlock> chunk_rows;
    for (const auto& [name, f] : chunks) {
      if (f != 0) chunk_rows.emplace_back(f, 0, std::vector<std::string>{name});
    }
    std::sort(chunk_rows.begin(), chunk_rows.end());
    n.groups.push_back(std::move(chunk_rows));
  }
  s.media = {};
  n.rest = std::move(s);
  return n;
}

void Rebuild(const PrefixIndex& from, PrefixIndex& to) {
  // Media registered in another order than the original's: bits differ, names must not.
  (void)to.Apply(WorkerKey{"ns/other", 0}, kLlama, Batch({[] {
                   BlockStored s = Store(99, Prompt(4), 4, 0, 1);
                   s.medium = "CPU";
                   s.locality = "REMOTE";
                   return s;
                 }()}));
  to.RemoveWorker(WorkerKey{"ns/other", 0});
  for (const WorkerKey& key : from.WorkerKeys()) {
    std::optional<WorkerSnapshot> s = from.ExportWorker(key);
    EXPECT_TRUE(s.has_value()) << WorkerKeyString(key);
    if (s.has_value()) {
      EXPECT_TRUE(to.ImportWorker(*s).ok()) << WorkerKeyString(key);
    }
  }
}

TEST(WorkerSnapshotTest, ARebuiltIndexAnswersEveryMatchAsTheOriginal) {
  PrefixIndex original;
  FirstLife(original);
  PrefixIndex rebuilt;
  Rebuild(original, rebuilt);

  EXPECT_EQ(original.WorkerKeys(), rebuilt.WorkerKeys());
  for (const WorkerKey& key : original.WorkerKeys()) {
    EXPECT_EQ(Normalize(*original.ExportWorker(key)), Normalize(*rebuilt.ExportWorker(key))) << WorkerKeyString(key);
    std::optional<WorkerStats> a = original.GetWorkerStats(key), b = rebuilt.GetWorkerStats(key);
    ASSERT_TRUE(a.has_value() && b.has_value());
    EXPECT_EQ(a->blocks, b->blocks);
    EXPECT_EQ(a->groups, b->groups);
    EXPECT_EQ(a->last_event_ts, b->last_event_ts);
    std::sort(a->blocks_by_medium.begin(), a->blocks_by_medium.end());
    std::sort(b->blocks_by_medium.begin(), b->blocks_by_medium.end());
    EXPECT_EQ(a->blocks_by_medium, b->blocks_by_medium);
  }
  EXPECT_EQ(original.Stats().entries, rebuilt.Stats().entries);
  EXPECT_EQ(original.Stats().blocks, rebuilt.Stats().blocks);
  const std::vector<std::string> answers = Answers(original);
  EXPECT_EQ(answers, Answers(rebuilt));
  // The workload matches something on every tier (else the comparison proves little).
  const std::string all = absl::StrJoin(answers, "\n");
  for (const char* needle : {"ns/plain#0", "ns/lora#1", "ns/hybrid#0", "ns/offload#0", "ns/cleared#0", "CPU:",
                             "CPU/REMOTE:"}) {
    EXPECT_THAT(all, ::testing::HasSubstr(needle));
  }

  SecondLife(original);
  SecondLife(rebuilt);
  EXPECT_EQ(Answers(original), Answers(rebuilt));
  EXPECT_EQ(original.Stats().entries, rebuilt.Stats().entries);
  for (const WorkerKey& key : original.WorkerKeys()) {
    EXPECT_EQ(Normalize(*original.ExportWorker(key)), Normalize(*rebuilt.ExportWorker(key))) << WorkerKeyString(key);
  }
}

TEST(WorkerSnapshotTest, TheCursorIsTheLastBatchAppliedWithOneAndAClearForgetsIt) {
  PrefixIndex index;
  EXPECT_EQ(index.ExportWorker(kPlain.key), std::nullopt);
  (void)index.Apply(kPlain.key, kLlama, Batch({Store(1, Prompt(0), 4, 0, 2)}));
  EXPECT_EQ(index.ExportWorker(kPlain.key)->cursor, std::nullopt);
  (void)index.Apply(kPlain.key, kLlama, Batch({Store(1, Prompt(0), 4, 2, 2)}), BatchCursor{7, 70, false});
  (void)index.Apply(kPlain.key, kLlama, Batch({}));
  EXPECT_EQ(index.ExportWorker(kPlain.key)->cursor, (BatchCursor{7, 70, false}));
  index.ClearWorker(kPlain.key);
  EXPECT_EQ(index.ExportWorker(kPlain.key)->cursor, std::nullopt);
  EXPECT_EQ(index.ExportWorker(kPlain.key)->entries(), 0u);
}

TEST(WorkerSnapshotTest, ImportRefusesAnExistingWorkerAndImpossibleSnapshots) {
  PrefixIndex index;
  (void)index.Apply(kPlain.key, kLlama, Batch({Store(1, Prompt(0), 4, 0, 2)}));
  WorkerSnapshot s = *index.ExportWorker(kPlain.key);
  absl::Status again = index.ImportWorker(s);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(again.message(), "worker ns/plain#0 already exists");

  s.worker = WorkerKey{"ns/new", 0};
  WorkerSnapshot unnamed = s;
  unnamed.groups[0].blocks[0].media = 1 << 3;  // a bit no name stands for
  absl::Status bad = index.ImportWorker(unnamed);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), ::testing::HasSubstr("worker ns/new#0: block"));
  WorkerSnapshot no_tier = s;
  no_tier.groups[0].blocks[0].media = 0;
  EXPECT_EQ(index.ImportWorker(no_tier).code(), absl::StatusCode::kInvalidArgument);
  WorkerSnapshot too_many = s;
  too_many.groups.resize(17);
  for (uint32_t i = 0; i < 17; ++i) too_many.groups[i].group_idx = i;
  EXPECT_EQ(index.ImportWorker(too_many).code(), absl::StatusCode::kInvalidArgument);
  WorkerSnapshot twice = s;
  twice.groups.push_back(twice.groups[0]);
  EXPECT_EQ(index.ImportWorker(twice).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index.ExportWorker(WorkerKey{"ns/new", 0}), std::nullopt);  // nothing created

  ASSERT_TRUE(index.ImportWorker(s).ok());
  EXPECT_EQ(index.Stats().entries, 4u);
}

TEST(WorkerSnapshotTest, ImportEnforcesTheCapsOfTheIndexItJoins) {
  PrefixIndex big;
  for (uint32_t p = 0; p < 4; ++p) (void)big.Apply(kPlain.key, kLlama, Batch({Store(1, Prompt(p), 4, 0, 10)}));
  PrefixIndex small(IndexOptions{.max_blocks_per_worker = 5});
  ASSERT_TRUE(small.ImportWorker(*big.ExportWorker(kPlain.key)).ok());
  EXPECT_EQ(small.Stats().entries, 5u);
}

// Batch i of a long-lived worker `w` (deterministic, so it can be replayed):
// 64 new blocks chained to the previous batch's (every third a new prompt),
// every fourth on CPU too, with removals, offloaded chunks of 4 blocks (which
// follow parents), a second (sliding-window) group from batch 300 on, and
// for worker 0 a clear at batch 2500.
EventBatch RacingBatch(uint64_t w, uint64_t i) {
  constexpr uint32_t kBs = 4;
  auto hash = [w](uint64_t batch, uint64_t j) { return (w + 1) * 1000000007ULL + batch * 64 + j + 1; };
  EventBatch b;
  b.ts = 1700000000.0 + static_cast<double>(i);
  if (w == 0 && i == 2500) b.events.push_back(AllBlocksCleared{});
  BlockStored s;
  s.block_size = kBs;
  if (i % 3 != 0 && i > 0) s.parent_block_hash = hash(i - 1, 63);
  for (uint64_t j = 0; j < 64; ++j) {
    s.block_hashes.push_back(hash(i, j));
    for (uint32_t t = 0; t < kBs; ++t) s.token_ids.push_back(static_cast<uint32_t>((w * 7 + i * 64 + j) * 5 + t));
  }
  if (i % 4 == 0) {
    BlockStored cpu = s;
    cpu.medium = "CPU";
    b.events.push_back(s);
    b.events.push_back(std::move(cpu));
  } else {
    b.events.push_back(std::move(s));
  }
  if (i % 5 == 0 && i >= 10) {
    BlockRemoved gone;
    for (uint64_t j = 0; j < 64; j += 3) gone.block_hashes.push_back(hash(i - 10, j));
    b.events.push_back(std::move(gone));
  }
  if (i % 7 == 0 && i >= 2) {
    BlockStored chunk;  // chunks of 4 blocks on CPU, naming blocks of the batch before
    chunk.block_size = 4 * kBs;
    chunk.medium = "CPU";
    chunk.block_hashes = {hash(i - 1, 7), hash(i - 1, 31)};
    b.events.push_back(std::move(chunk));
    if (i % 14 == 0) {
      BlockRemoved chunk_gone;
      chunk_gone.medium = "CPU";
      chunk_gone.block_hashes = {hash(i - 1, 31)};
      b.events.push_back(std::move(chunk_gone));
    }
  }
  if (i >= 300 && i % 2 == 0) {
    BlockStored window;
    window.group_idx = 1;
    window.kv_cache_spec_kind = "sliding_window";
    window.kv_cache_spec_sliding_window = 16;
    window.block_size = kBs;
    for (uint64_t j = 0; j < 8; ++j) {
      window.block_hashes.push_back(hash(i, 100 + j));
      for (uint32_t t = 0; t < kBs; ++t) window.token_ids.push_back(static_cast<uint32_t>(i * 8 + j + t));
    }
    b.events.push_back(std::move(window));
  }
  return b;
}

const WorkerKey kRacing[] = {{"ns/race-a", 0}, {"ns/race-b", 0}, {"ns/race-c", 1}};

// Exports taken while another thread applies batches are each the worker
// exactly as it was right after the batch of its cursor: equal (blocks,
// parents, groups, tiers, contexts) to the export of a fresh index that
// applied the same batches up to that cursor. Workers of 100k+ entries, so
// each export takes several holds of the lock with batches applied in between
// (blocks stored, moved by the table's growth, removed, offloaded, cleared, a
// group created).
TEST(WorkerSnapshotTest, AnExportRacingApplyIsTheWorkerAtItsCursor) {
  constexpr uint64_t kBefore = 1800;  // batches applied before the exports start
  constexpr uint64_t kTotal = 3200;
  PrefixIndex index;
  auto apply = [](PrefixIndex& into, uint64_t w, uint64_t i) {
    (void)into.Apply(kRacing[w], kLlama, RacingBatch(w, i), BatchCursor{i, i * 3 + 1, true});
  };
  for (uint64_t i = 0; i < kBefore; ++i) {
    for (uint64_t w = 0; w < std::size(kRacing); ++w) apply(index, w, i);
  }
  std::atomic<bool> done{false};
  std::thread ingest([&] {
    for (uint64_t i = kBefore; i < kTotal; ++i) {
      for (uint64_t w = 0; w < std::size(kRacing); ++w) apply(index, w, i);
    }
    done = true;
  });
  std::vector<std::pair<uint64_t, WorkerSnapshot>> exports;  // (worker, export)
  // At least 3 exports, at most 24 (each is checked below against a replay:
  // unbounded, a sanitized build's slow ingestion made hundreds of them).
  for (uint64_t round = 0; (!done.load() || round < 3) && round < 24; ++round) {
    const uint64_t w = round % std::size(kRacing);
    ExportPause pause;
    std::optional<WorkerSnapshot> s = index.ExportWorker(kRacing[w], &pause);
    ASSERT_TRUE(s.has_value());
    EXPECT_GE(pause.holds, 3u);
    exports.emplace_back(w, *std::move(s));
  }
  ingest.join();
  ASSERT_GE(exports.size(), 3u);
  // Every export against a serial replay of its worker up to its cursor: one
  // replay per worker, advanced from one export's cursor to the next.
  std::sort(exports.begin(), exports.end(), [](const auto& a, const auto& b) {
    return std::pair(a.first, a.second.cursor.value_or(BatchCursor{}).seq) <
           std::pair(b.first, b.second.cursor.value_or(BatchCursor{}).seq);
  });
  std::map<uint64_t, std::pair<PrefixIndex, uint64_t>> replays;  // worker -> (replay, next seq to apply)
  for (const auto& [w, s] : exports) {
    ASSERT_TRUE(s.cursor.has_value());
    auto& [replay, next] = replays[w];
    for (; next <= s.cursor->seq; ++next) apply(replay, w, next);
    std::optional<WorkerSnapshot> truth = replay.ExportWorker(kRacing[w]);
    ASSERT_TRUE(truth.has_value());
    if (w != 0 || s.cursor->seq < 2500) {  // (worker 0 is cleared at 2500)
      EXPECT_GT(truth->entries(), 100000u);
    }
    EXPECT_EQ(s.entries(), truth->entries()) << WorkerKeyString(kRacing[w]) << " at seq " << s.cursor->seq;
    EXPECT_TRUE(Normalize(s) == Normalize(*truth)) << WorkerKeyString(kRacing[w]) << " at seq " << s.cursor->seq;
  }
}

}  // namespace
}  // namespace kvindex
