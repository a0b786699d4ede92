#include "core/index/internal/worker_blocks.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <variant>

#include "core/index/block_hash.h"
#include "core/index/extra_keys_hash.h"

namespace kvindex {

WorkerBlocks::WorkerBlocks(uint32_t id, WorkerKey key, const Shared& shared)
    : id_(id),
      key_(std::move(key)),
      table_(shared.table),
      contexts_(shared.contexts),
      media_(shared.media),
      counters_(shared.counters),
      updates_(id) {}

ApplyResult WorkerBlocks::Apply(const WorkerContext& context, const EventBatch& batch, size_t max_blocks) {
  ApplyResult result;
  absl::MutexLock lock(&lock_.mu);
  if (removed_) {
    result.worker_removed = true;
    return result;
  }
  model_ = context.model;
  default_lora_ = context.default_lora;
  for (const Event& event : batch.events) {
    if (const auto* stored = std::get_if<BlockStored>(&event)) {
      ApplyStored(*stored, result);
    } else if (const auto* removed = std::get_if<BlockRemoved>(&event)) {
      ApplyRemoved(*removed, result);
    } else {
      ClearLocked();
      ++result.clears;
    }
  }
  last_event_ts_ = batch.ts;
  if (max_blocks != 0) {
    while (blocks_.size() > max_blocks) {
      EvictOne();
      ++result.evictions;
    }
  }
  unresolved_parents_ += result.unresolved_parents;
  counters_.unresolved_parents.fetch_add(result.unresolved_parents, std::memory_order_relaxed);
  Publish();
  return result;
}

void WorkerBlocks::Clear() {
  absl::MutexLock lock(&lock_.mu);
  ClearLocked();
  Publish();
}

void WorkerBlocks::Remove() {
  absl::MutexLock lock(&lock_.mu);
  removed_ = true;
  ClearLocked();
  Publish();
  contexts_.Release(used_contexts_, lock_);
  used_contexts_.clear();
}

void WorkerBlocks::EvictOverCap(uint64_t max_entries, uint64_t at_most) {
  absl::MutexLock lock(&lock_.mu);
  const uint64_t entries = counters_.entries.load(std::memory_order_relaxed);
  const uint64_t excess = entries > max_entries ? entries - max_entries : 0;
  for (uint64_t i = 0; i < std::min(excess, at_most) && blocks_.size() > 0; ++i) EvictOne();
  Publish();
}

WorkerStats WorkerBlocks::Stats() const {
  WorkerStats s;
  s.worker = key_;
  absl::MutexLock lock(&lock_.mu);
  s.model = model_;
  s.blocks = live_.load(std::memory_order_relaxed);
  for (int b = 0; b < kMaxMedia; ++b) {
    if (blocks_by_medium_[b] != 0) s.blocks_by_medium.emplace_back(media_.Name(b), blocks_by_medium_[b]);
  }
  s.evictions = evictions_;
  s.unresolved_parents = unresolved_parents_;
  s.last_event_ts = last_event_ts_;
  return s;
}

std::vector<uint64_t> WorkerBlocks::EngineHashes() const {
  std::vector<uint64_t> out;
  absl::MutexLock lock(&lock_.mu);
  out.reserve(blocks_.size());
  blocks_.ForEach([&out](const EngineMap::Block& b) { out.push_back(b.engine); });
  return out;
}

size_t WorkerBlocks::MemoryBytes() const {
  absl::MutexLock lock(&lock_.mu);
  return sizeof(WorkerBlocks) + blocks_.MemoryBytes() + updates_.MemoryBytes();
}

void WorkerBlocks::ApplyStored(const BlockStored& ev, ApplyResult& result) {
  const size_t n = ev.block_hashes.size();
  if (n == 0) return;
  if (!ev.HasTokens()) return ApplyOffloaded(ev, result);
  std::optional<uint64_t> parent;
  if (ev.block_size != 0 && ev.token_ids.size() == size_t{ev.block_size} * n) {  // else: hand-built batch
    if (!ev.parent_block_hash) {
      parent = 0;  // the context seed, below
    } else if (auto p = blocks_.Find(*ev.parent_block_hash)) {
      parent = p->index;
    }
  }
  if (!parent) {
    ++result.unresolved_parents;
    result.blocks_unindexed += n;
    return;
  }
  const std::string& lora = ev.lora_name ? *ev.lora_name : default_lora_;
  const uint64_t seed = ContextSeedFor(lora, ev.block_size);
  uint64_t x = ev.parent_block_hash ? *parent : seed;
  // Extra keys per block, and SGLang's salt on a prompt's first block (extra_keys_hash.h).
  const bool salted = ev.cache_salt.has_value() && !ev.cache_salt->empty() && !ev.parent_block_hash;
  const bool keyed = !ev.extra_keys.empty() || salted;
  ExtraKeysHasher keys;
  block_size_.store(ev.block_size, std::memory_order_relaxed);
  const MediumMask m = media_.BitOf(ev.medium);
  const absl::Span<const uint32_t> tokens(ev.token_ids);
  // Each store kPrefetchAhead blocks behind the prefetch of its engine-map
  // slot (its block-table slot is prefetched when the holders are carried out).
  for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) blocks_.Prefetch(ev.block_hashes[i]);
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) blocks_.Prefetch(ev.block_hashes[i + kPrefetchAhead]);
    x = HashBlock(x, tokens.subspan(i * ev.block_size, ev.block_size));
    if (keyed) {
      keys.Clear();
      if (i < ev.extra_keys.size()) AddEventExtraKeys(ev.extra_keys[i], lora, keys);
      if (i == 0 && salted) keys.AddStr(*ev.cache_salt);
      x = keys.Hash(x);
    }
    if (Store(ev.block_hashes[i], x, m)) ++result.blocks_stored;
  }
}

// An offloaded chunk (no tokens) names a block the worker stored before (its
// GPU copy): that block is now also on the event's medium. A hash the worker
// does not hold cannot be indexed (nothing says what it contains).
void WorkerBlocks::ApplyOffloaded(const BlockStored& ev, ApplyResult& result) {
  const MediumMask m = media_.BitOf(ev.medium);
  for (uint64_t engine : ev.block_hashes) {
    const std::optional<EngineMap::Block> b = blocks_.Find(engine);
    if (!b) {
      ++result.unknown_chunks;
      continue;
    }
    if (Store(engine, b->index, m)) ++result.blocks_stored;
  }
}

void WorkerBlocks::ApplyRemoved(const BlockRemoved& ev, ApplyResult& result) {
  const MediumMask m = media_.BitOf(ev.medium);
  // Each removal kPrefetchAhead blocks behind the prefetch of its engine-map slot.
  const absl::Span<const uint64_t> engines(ev.block_hashes);
  const size_t n = engines.size();
  for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) blocks_.Prefetch(engines[i]);
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) blocks_.Prefetch(engines[i + kPrefetchAhead]);
    const std::optional<EngineMap::Block> b = blocks_.Remove(engines[i], m);
    if (!b) {
      ++result.unknown_removals;
      continue;
    }
    ++result.blocks_removed;
    if (b->media == m) {
      Forget(*b);
    } else {
      CountMedia(m, -1);
      Queue({b->index, HolderOp::kChangeMedia, b->media, static_cast<MediumMask>(b->media & ~m)});
    }
  }
}

// Engine block `engine` is (now also) on medium `m` and maps to X. Returns
// true when something changed in the index.
bool WorkerBlocks::Store(uint64_t engine, uint64_t x, MediumMask m) {
  const std::optional<EngineMap::Block> old = blocks_.Store(engine, x, m);  // marks it recently stored
  if (old && old->index == x) {
    if (old->media & m) return false;
    CountMedia(m, +1);
    Queue({x, HolderOp::kChangeMedia, old->media, static_cast<MediumMask>(old->media | m)});
    return true;
  }
  if (old) Forget(*old);  // the engine reused a hash for other content: the new content wins
  CountMedia(m, +1);
  Queue({x, HolderOp::kAddRef, m});
  return true;
}

// Accounts for engine block `b`, already gone from blocks_.
void WorkerBlocks::Forget(const EngineMap::Block& b) {
  Queue({b.index, HolderOp::kDropRef, b.media});
  CountMedia(b.media, -1);
}

void WorkerBlocks::CountMedia(MediumMask media, int delta) {
  for (int b = 0; b < kMaxMedia; ++b) {
    if (media >> b & 1) blocks_by_medium_[b] += delta;
  }
}

// Seed of the worker's context (its model, `lora`, `block_size`); registers
// the context so Match knows to try this block size.
uint64_t WorkerBlocks::ContextSeedFor(const std::string& lora, uint32_t block_size) {
  const auto& [model, last_lora, last_bs] = last_context_;
  if (last_seed_ == 0 || last_bs != block_size || last_lora != lora || model != model_) {
    last_context_ = ContextKey{model_, lora, block_size};
    last_seed_ = ContextSeed(model_, lora, block_size);
    if (used_contexts_.insert(last_context_).second) contexts_.Use(last_context_, lock_);
  }
  return last_seed_;
}

void WorkerBlocks::EvictOne() {
  Forget(blocks_.EvictOne());
  ++evictions_;
  counters_.evictions.fetch_add(1, std::memory_order_relaxed);
}

void WorkerBlocks::ClearLocked() {
  // ForEach calls back here, on this thread, under lock_.mu; the analysis
  // checks the lambda as a function of its own and cannot see that.
  blocks_.ForEach([this](const EngineMap::Block& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Queue({b.index, HolderOp::kClear});
  });
  table_.Apply(updates_, lock_);  // before the aliases go: updates queued before the clear use them
  updates_.ForgetAliases();
  blocks_.Clear();
  blocks_by_medium_ = {};
}

// Ends a mutation: carries out the queued holder updates, then publishes the
// block count to live_ and its change to the index's entries.
void WorkerBlocks::Publish() {
  table_.Apply(updates_, lock_);
  const uint64_t now = blocks_.size();
  const uint64_t before = live_.exchange(now, std::memory_order_relaxed);
  if (now != before) counters_.entries.fetch_add(now - before, std::memory_order_relaxed);  // wraps when shrinking
}

}  // namespace kvindex
