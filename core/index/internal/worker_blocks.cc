#include "core/index/internal/worker_blocks.h"

#include <algorithm>
#include <bit>
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
      speculative_(shared.speculative) {}

ApplyResult WorkerBlocks::Apply(const WorkerContext& context, const EventBatch& batch, size_t max_blocks,
                                const std::optional<BatchCursor>& cursor) {
  ApplyResult result;
  absl::MutexLock lock(&lock_.mu);
  if (removed_) {
    result.worker_removed = true;
    return result;
  }
  model_ = context.model;
  default_lora_ = context.default_lora;
  settling_ = HasSpeculative();
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
  if (cursor.has_value()) cursor_ = cursor;
  if (max_blocks != 0) {
    for (size_t held = BlocksLocked(); held > max_blocks; --held) {
      EvictOne();
      ++result.evictions;
    }
  }
  unresolved_parents_ += result.unresolved_parents;
  counters_.unresolved_parents.fetch_add(result.unresolved_parents, std::memory_order_relaxed);
  Publish();
  if (settling_) {
    SettleSpeculative();
    settling_ = false;
  }
  return result;
}

uint32_t WorkerBlocks::Speculate(std::string_view model, const ContextKey& context, absl::Span<const uint64_t> xs,
                                 absl::Time deadline) {
  if (speculative_ == nullptr) return 0;
  absl::MutexLock lock(&lock_.mu);
  if (removed_) return 0;
  if (model_.empty()) model_ = std::string(model);
  // The entries stand for the group Match counts (its primary).
  uint32_t slot = 0;
  const Group* primary = Primary();
  for (uint32_t i = 0; i < groups_.size(); ++i) {
    if (groups_[i].get() == primary) slot = i;
  }
  // Every holder update of the worker is carried out (each call ends with
  // Publish), so the table says exactly which X it holds.
  std::vector<uint64_t> fresh;
  fresh.reserve(xs.size());
  HolderTable::Scratch scratch;
  for (uint64_t x : xs) {
    const bool held = table_.WithHolders(x, scratch, [this](absl::Span<const Holder> holders) {
      return std::any_of(holders.begin(), holders.end(),
                         [this](const Holder& h) { return WorkerOfHolder(h.worker) == id_; });
    });
    if (!held) fresh.push_back(x);
  }
  hint_block_size_.store(std::get<2>(context), std::memory_order_relaxed);
  return speculative_->Record(HolderId(id_, slot), context, fresh, deadline, lock_);
}

bool WorkerBlocks::HasSpeculative() const {
  return speculative_ != nullptr && speculative_->Watches(id_);
}

void WorkerBlocks::SettleSpeculative() {
  speculative_->Confirm(id_, stored_xs_, lock_);
  speculative_->Drop(id_, forgotten_xs_, lock_);
  stored_xs_.clear();
  forgotten_xs_.clear();
}

void WorkerBlocks::DropSpeculative(bool forget) {
  if (speculative_ == nullptr) return;
  speculative_->DropWorker(id_, forget, lock_);
}

void WorkerBlocks::Clear() {
  absl::MutexLock lock(&lock_.mu);
  ClearLocked();
  if (HasSpeculative()) DropSpeculative(/*forget=*/false);
  cursor_.reset();
  Publish();
}

void WorkerBlocks::Remove() {
  absl::MutexLock lock(&lock_.mu);
  removed_ = true;
  ClearLocked();
  DropSpeculative(/*forget=*/true);
  Publish();
  contexts_.Release(used_contexts_, lock_);
  used_contexts_.clear();
}

void WorkerBlocks::EvictOverCap(uint64_t max_entries, uint64_t at_most) {
  absl::MutexLock lock(&lock_.mu);
  const uint64_t entries = counters_.entries.load(std::memory_order_relaxed);
  const uint64_t excess = entries > max_entries ? entries - max_entries : 0;
  for (uint64_t i = 0, held = BlocksLocked(); i < std::min(excess, at_most) && i < held; ++i) EvictOne();
  Publish();
}

WorkerStats WorkerBlocks::Stats() const {
  WorkerStats s;
  s.worker = key_;
  absl::MutexLock lock(&lock_.mu);
  s.model = model_;
  if (const Group* primary = Primary()) {
    s.blocks = primary->blocks.size();
    for (int b = 0; b < kMaxMedia; ++b) {
      const uint64_t n = primary->blocks_by_medium[b];
      if (n != 0) s.blocks_by_medium.emplace_back(media_.Name(b), n);
    }
  }
  const bool named = std::any_of(groups_.begin(), groups_.end(), [](const auto& g) { return g->named; });
  for (const auto& g : groups_) {
    if (!named) break;
    s.groups.push_back(GroupStats{g->group_idx, g->kind.value_or(""),
                                  KindOf(g->kind) == GroupKind::kSlidingWindow ? g->window : 0, g->block_size,
                                  g->blocks.size()});
  }
  std::sort(s.groups.begin(), s.groups.end(),
            [](const GroupStats& a, const GroupStats& b) { return a.group_idx < b.group_idx; });
  s.evictions = evictions_;
  s.unresolved_parents = unresolved_parents_;
  s.last_event_ts = last_event_ts_;
  if (speculative_ != nullptr) {
    s.speculative_entries = speculative_->CountOf(id_);
    s.speculative_ttl = speculative_->TtlOf(id_);
  }
  return s;
}

std::vector<uint64_t> WorkerBlocks::EngineHashes() const {
  std::vector<uint64_t> out;
  absl::MutexLock lock(&lock_.mu);
  out.reserve(BlocksLocked());
  for (const auto& g : groups_) g->blocks.ForEach([&out](const EngineMap::Block& b) { out.push_back(b.engine); });
  return out;
}

size_t WorkerBlocks::MemoryBytes() const {
  absl::MutexLock lock(&lock_.mu);
  size_t bytes = sizeof(WorkerBlocks) + groups_.capacity() * sizeof(groups_[0]);
  for (const auto& g : groups_) {
    bytes += sizeof(Group) + g->blocks.MemoryBytes() + g->updates.MemoryBytes();
  }
  return bytes;
}

WorkerBlocks::Layout WorkerBlocks::GroupLayout() const {
  Layout layout;
  layout.groups = std::min(group_count_.load(std::memory_order_acquire), kMaxGroupsPerWorker);
  for (uint32_t slot = 0; slot < layout.groups; ++slot) {
    layout.shapes[slot] = GroupShape::Unpack(group_shapes_[slot].load(std::memory_order_relaxed));
  }
  return layout;
}

WorkerBlocks::Group* WorkerBlocks::FindGroup(std::optional<uint32_t> group_idx) const {
  const uint32_t idx = group_idx.value_or(0);
  for (const auto& g : groups_) {
    if (g->group_idx == idx) return g.get();
  }
  return nullptr;
}

WorkerBlocks::Group* WorkerBlocks::GroupOf(std::optional<uint32_t> group_idx) {
  if (Group* g = FindGroup(group_idx)) return g;
  const uint32_t idx = group_idx.value_or(0);
  if (idx > kMaxGroupIdx || groups_.size() == kMaxGroupsPerWorker) return nullptr;
  Group& g = NewGroup();
  g.group_idx = idx;
  return &g;
}

WorkerBlocks::Group& WorkerBlocks::NewGroup() {
  groups_.push_back(std::make_unique<Group>(HolderId(id_, static_cast<uint32_t>(groups_.size()))));
  if (exporting_) groups_.back()->blocks.BeginCut();
  return *groups_.back();
}

const WorkerBlocks::Group* WorkerBlocks::Primary() const {
  const Group* primary = nullptr;
  for (const auto& g : groups_) {
    if (primary == nullptr || PrimaryBefore(KindOf(g->kind), g->group_idx, KindOf(primary->kind), primary->group_idx)) {
      primary = g.get();
    }
  }
  return primary;
}

void WorkerBlocks::ApplyStored(const BlockStored& ev, ApplyResult& result) {
  const size_t n = ev.block_hashes.size();
  if (n == 0) return;
  Group* g = GroupOf(ev.group_idx);
  if (g == nullptr) {  // not a group a real engine has
    result.blocks_unindexed += n;
    return;
  }
  g->named |= ev.group_idx.has_value() || ev.kv_cache_spec_kind.has_value();
  if (ev.kv_cache_spec_kind) g->kind = ev.kv_cache_spec_kind;
  if (ev.kv_cache_spec_sliding_window) g->window = *ev.kv_cache_spec_sliding_window;
  if (!ev.HasTokens()) return ApplyOffloaded(*g, ev, result);
  std::optional<uint64_t> parent;
  if (ev.block_size != 0 && ev.token_ids.size() == size_t{ev.block_size} * n) {  // else: hand-built batch
    if (!ev.parent_block_hash) {
      parent = 0;  // the context seed, below
    } else {
      parent = ParentIndex(*g, *ev.parent_block_hash, ev.block_size);
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
  g->block_size = ev.block_size;
  const MediumMask m = media_.BitOf(ev.medium, ev.locality, ev.ownership);
  const absl::Span<const uint32_t> tokens(ev.token_ids);
  // Each store kPrefetchAhead blocks behind the prefetch of its engine-map
  // slot (its block-table slot is prefetched when the holders are carried out).
  EngineMap& blocks = g->blocks;
  for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) blocks.Prefetch(ev.block_hashes[i]);
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) blocks.Prefetch(ev.block_hashes[i + kPrefetchAhead]);
    x = HashBlock(x, tokens.subspan(i * ev.block_size, ev.block_size));
    if (keyed) {
      keys.Clear();
      if (i < ev.extra_keys.size()) AddEventExtraKeys(ev.extra_keys[i], lora, keys);
      if (i == 0 && salted) keys.AddStr(*ev.cache_salt);
      x = keys.Hash(x);
    }
    const std::optional<uint64_t> engine_parent = i > 0 ? ev.block_hashes[i - 1] : ev.parent_block_hash;
    if (Store(*g, ev.block_hashes[i], x, m, engine_parent)) ++result.blocks_stored;
  }
}

// X of the parent `engine` of a block group `g` stores: the group's own
// block, else another group's of the same block size (vLLM hashes per block
// size, so the same hash is the same tokens: a Mamba or window group may
// store a block whose parent only the full-attention group kept).
std::optional<uint64_t> WorkerBlocks::ParentIndex(const Group& g, uint64_t engine, uint32_t block_size) const {
  if (auto p = g.blocks.Find(engine)) return p->index;
  for (const auto& other : groups_) {
    if (other.get() == &g || other->block_size != block_size) continue;
    if (auto p = other->blocks.Find(engine)) return p->index;
  }
  return std::nullopt;
}

// An offloaded chunk (no tokens) names a block the group stored before (its
// GPU copy), the last of the f = event block size / the group's block size
// it covers: those blocks are now also on the event's medium. A hash the
// group does not hold cannot be indexed (nothing says what it contains).
void WorkerBlocks::ApplyOffloaded(Group& g, const BlockStored& ev, ApplyResult& result) {
  const MediumMask m = media_.BitOf(ev.medium, ev.locality, ev.ownership);
  uint32_t f = 1;
  if (g.block_size != 0 && ev.block_size % g.block_size == 0 && ev.block_size != 0) f = ev.block_size / g.block_size;
  if (f > kMaxChunkBlocks) {  // not a real engine's chunk
    result.unknown_chunks += ev.block_hashes.size();
    return;
  }
  g.chunk_blocks[std::countr_zero(m)] = f;
  std::vector<uint64_t> covered;
  for (uint64_t engine : ev.block_hashes) {
    if (!g.blocks.Find(engine)) {
      ++result.unknown_chunks;
      continue;
    }
    covered.assign(1, engine);
    AppendChunkPredecessors(g, engine, f, covered);
    for (uint64_t e : covered) {
      const std::optional<EngineMap::Block> b = g.blocks.Find(e);
      if (b && Store(g, e, b->index, m, b->parent)) ++result.blocks_stored;
    }
  }
}

void WorkerBlocks::AppendChunkPredecessors(const Group& g, uint64_t engine, uint32_t f, std::vector<uint64_t>& out) {
  std::optional<EngineMap::Block> b = g.blocks.Find(engine);
  for (uint32_t k = 1; k < f && b && b->parent; ++k) {
    b = g.blocks.Find(*b->parent);
    if (b) out.push_back(b->engine);
  }
}

void WorkerBlocks::ApplyRemoved(const BlockRemoved& ev, ApplyResult& result) {
  Group* g = FindGroup(ev.group_idx);
  if (g == nullptr) {  // a group the worker never stored into holds nothing
    result.unknown_removals += ev.block_hashes.size();
    return;
  }
  const MediumMask m = media_.BitOf(ev.medium, ev.locality, ev.ownership);
  // A medium that holds chunks of f > 1 blocks removes each chunk's predecessors too.
  const uint32_t f = g->chunk_blocks[std::countr_zero(m)];
  std::vector<uint64_t> chunks;
  if (f > 1) {
    for (uint64_t engine : ev.block_hashes) {
      const std::optional<EngineMap::Block> b = g->blocks.Find(engine);
      if (!b || (b->media & m) == 0) {
        ++result.unknown_removals;
        continue;
      }
      chunks.push_back(engine);
      AppendChunkPredecessors(*g, engine, f, chunks);
    }
  }
  // Each removal kPrefetchAhead blocks behind the prefetch of its engine-map slot.
  EngineMap& blocks = g->blocks;
  const absl::Span<const uint64_t> engines(f > 1 ? chunks : ev.block_hashes);
  const size_t n = engines.size();
  for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) blocks.Prefetch(engines[i]);
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) blocks.Prefetch(engines[i + kPrefetchAhead]);
    const std::optional<EngineMap::Block> b = blocks.Remove(engines[i], m);
    if (!b) {
      if (f <= 1) ++result.unknown_removals;  // (chunks: counted above; a predecessor may be off the medium already)
      continue;
    }
    ++result.blocks_removed;
    if (b->media == m) {
      Forget(*g, *b);
    } else {
      CountMedia(*g, m, -1);
      Queue(*g, {b->index, HolderOp::kChangeMedia, b->media, static_cast<MediumMask>(b->media & ~m)});
    }
  }
}

// Engine block `engine` of group `g` is (now also) on medium `m` and maps to
// X. Returns true when something changed in the index.
bool WorkerBlocks::Store(Group& g, uint64_t engine, uint64_t x, MediumMask m, std::optional<uint64_t> parent) {
  if (settling_) stored_xs_.push_back(x);
  const std::optional<EngineMap::Block> old = g.blocks.Store(engine, x, m, parent);  // marks it recently stored
  if (old && old->index == x) {
    if (old->media & m) return false;
    CountMedia(g, m, +1);
    Queue(g, {x, HolderOp::kChangeMedia, old->media, static_cast<MediumMask>(old->media | m)});
    return true;
  }
  if (old) Forget(g, *old);  // the engine reused a hash for other content: the new content wins
  CountMedia(g, m, +1);
  Queue(g, {x, HolderOp::kAddRef, m});
  return true;
}

// Accounts for engine block `b` of group `g`, already gone from its blocks.
void WorkerBlocks::Forget(Group& g, const EngineMap::Block& b) {
  if (settling_) forgotten_xs_.push_back(b.index);
  Queue(g, {b.index, HolderOp::kDropRef, b.media});
  CountMedia(g, b.media, -1);
}

void WorkerBlocks::CountMedia(Group& g, MediumMask media, int delta) {
  for (int b = 0; b < kMaxMedia; ++b) {
    if (media >> b & 1) g.blocks_by_medium[b] += delta;
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
  Group* largest = nullptr;
  for (const auto& g : groups_) {
    if (largest == nullptr || g->blocks.size() > largest->blocks.size()) largest = g.get();
  }
  if (largest == nullptr || largest->blocks.size() == 0) return;
  Forget(*largest, largest->blocks.EvictOne());
  ++evictions_;
  counters_.evictions.fetch_add(1, std::memory_order_relaxed);
}

void WorkerBlocks::ClearLocked() {
  if (settling_) {  // an AllBlocksCleared: what the batch stored before it is confirmed, then every entry dropped
    SettleSpeculative();
    DropSpeculative(/*forget=*/false);
  }
  for (const auto& group : groups_) {
    Group& g = *group;
    // ForEach calls back here, on this thread, under lock_.mu; the analysis
    // checks the lambda as a function of its own and cannot see that.
    g.blocks.ForEach([this, &g](const EngineMap::Block& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      Queue(g, {b.index, HolderOp::kClear});
    });
    table_.Apply(g.updates, lock_);  // before the aliases go: updates queued before the clear use them
    g.updates.ForgetAliases();
    g.blocks.Clear();
    g.blocks_by_medium = {};
  }
}

size_t WorkerBlocks::BlocksLocked() const {
  size_t n = 0;
  for (const auto& g : groups_) n += g->blocks.size();
  return n;
}

// Ends a mutation: carries out the queued holder updates, settles the
// groups' cuts during an export, publishes the groups' shapes, then the
// block count to live_ and its change to the index's entries.
void WorkerBlocks::Publish() {
  for (const auto& g : groups_) table_.Apply(g->updates, lock_);
  if (exporting_) SettleCuts();
  for (size_t slot = 0; slot < groups_.size(); ++slot) {
    const Group& g = *groups_[slot];
    const GroupShape shape{g.group_idx, KindOf(g.kind), g.block_size, g.window};
    group_shapes_[slot].store(shape.Pack(), std::memory_order_relaxed);
  }
  group_count_.store(static_cast<uint32_t>(groups_.size()), std::memory_order_release);
  if (const Group* primary = Primary(); primary != nullptr && primary->block_size != 0) {
    block_size_.store(primary->block_size, std::memory_order_relaxed);
  }
  const uint64_t now = BlocksLocked();
  const uint64_t before = live_.exchange(now, std::memory_order_relaxed);
  if (now != before) counters_.entries.fetch_add(now - before, std::memory_order_relaxed);  // wraps when shrinking
}

}  // namespace kvindex
