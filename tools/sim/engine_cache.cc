#include "tools/sim/engine_cache.h"

#include <algorithm>
#include <cstdlib>
#include <tuple>
#include <utility>
#include <variant>

#include "spdlog/spdlog.h"
#include "tools/sim/engine_hash.h"
#include "tools/sim/reference_hash.h"
#include "tools/sim/rng.h"

namespace kvindex::sim {
namespace {

constexpr size_t kNoRun = ~size_t{0};

[[noreturn]] void CannotHappen(const char* what) {
  spdlog::critical("EngineCache invariant broken: {}", what);
  std::abort();
}

}  // namespace

EngineCache::EngineCache(EngineCacheOptions options)
    : options_(std::move(options)),
      context_seed_(ReferenceSeed(options_.model, options_.lora_name, options_.block_size)),
      salt_(options_.salt) {
  if (options_.block_size == 0 || options_.gpu_capacity_blocks == 0) {
    CannotHappen("block_size and gpu_capacity_blocks must be >= 1");
  }
  if (options_.hybrid == HybridKind::kSlidingWindow && options_.sliding_window == 0) {
    CannotHappen("a sliding window must be >= 1 token");
  }
}

size_t EngineCache::Group1Keep() const {
  if (options_.hybrid == HybridKind::kMamba) return 1;
  const uint64_t w = options_.sliding_window;
  return static_cast<size_t>((w - 1 + options_.block_size - 1) / options_.block_size);
}

void EngineCache::Link(Tier tier, uint32_t slot) {
  Lru& l = lru(tier);
  Block& b = slots_[slot];
  b.prev[tier] = kNone;
  b.next[tier] = l.head;
  if (l.head != kNone) slots_[l.head].prev[tier] = slot;
  l.head = slot;
  if (l.tail == kNone) l.tail = slot;
  ++l.size;
}

void EngineCache::Unlink(Tier tier, uint32_t slot) {
  Lru& l = lru(tier);
  Block& b = slots_[slot];
  if (b.prev[tier] != kNone) {
    slots_[b.prev[tier]].next[tier] = b.next[tier];
  } else {
    l.head = b.next[tier];
  }
  if (b.next[tier] != kNone) {
    slots_[b.next[tier]].prev[tier] = b.prev[tier];
  } else {
    l.tail = b.prev[tier];
  }
  b.prev[tier] = b.next[tier] = kNone;
  --l.size;
}

void EngineCache::Touch(Tier tier, uint32_t slot) {
  if (lru(tier).head == slot) return;
  Unlink(tier, slot);
  Link(tier, slot);
}

absl::Span<const uint32_t> EngineCache::TokensOf(uint32_t slot) const {
  return absl::MakeConstSpan(tokens_).subspan(size_t{slot} * options_.block_size, options_.block_size);
}

uint32_t EngineCache::Allocate() {
  if (!free_slots_.empty()) {
    const uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    slots_[slot] = Block{};
    return slot;
  }
  slots_.emplace_back();
  keys_.emplace_back();
  tokens_.resize(tokens_.size() + options_.block_size);
  return static_cast<uint32_t>(slots_.size() - 1);
}

BlockStored EngineCache::StoredEvent(uint32_t first_slot, const char* medium, uint32_t group) const {
  const Block& b = slots_[first_slot];
  BlockStored s;
  if (b.parent != kNone) s.parent_block_hash = slots_[b.parent].engine_hash;
  s.block_size = options_.block_size;
  s.medium = medium;
  if (!options_.lora_name.empty()) {
    s.lora_id = 1;
    s.lora_name = options_.lora_name;
  }
  if (hybrid()) {
    s.group_idx = group;
    if (group == 0) {
      s.kv_cache_spec_kind = kFullAttention;
    } else if (options_.hybrid == HybridKind::kMamba) {
      s.kv_cache_spec_kind = kMambaKind;
    } else {
      s.kv_cache_spec_kind = kSlidingWindowKind;
      s.kv_cache_spec_sliding_window = options_.sliding_window;
    }
  }
  AppendStored(s, first_slot);
  return s;
}

void EngineCache::AppendStored(BlockStored& s, uint32_t slot) const {
  const Block& b = slots_[slot];
  s.block_hashes.push_back(b.engine_hash);
  const auto tokens = TokensOf(slot);
  s.token_ids.insert(s.token_ids.end(), tokens.begin(), tokens.end());
  ExtraKey keys = keys_[slot];
  if (b.salted && options_.salt_as_field) {  // SGLang: the salt is its own field (block 0 leads its event)
    s.cache_salt = keys.items.back().bytes;
    keys.items.pop_back();
    if (keys.items.empty()) keys = ExtraKey{};
  }
  if (keys.kind != ExtraKey::Kind::kNil || !s.extra_keys.empty()) {
    s.extra_keys.resize(s.block_hashes.size() - 1);  // nil for the blocks before
    s.extra_keys.push_back(std::move(keys));
  }
}

void EngineCache::EmitRemoved(Tier tier, uint32_t slot, std::vector<Event>* events, uint32_t group) {
  const char* medium = tier == kGpuTier ? kGpu : kCpu;
  if (group != 0) {
    ++counters_.group1_removed;
  } else {
    ++(tier == kGpuTier ? counters_.removed_gpu : counters_.removed_cpu);
  }
  const std::optional<uint32_t> group_idx = hybrid() ? std::optional<uint32_t>(group) : std::nullopt;
  if (!options_.one_removal_per_event && !events->empty()) {
    if (auto* last = std::get_if<BlockRemoved>(&events->back());
        last != nullptr && last->medium == medium && last->group_idx == group_idx) {
      last->block_hashes.push_back(slots_[slot].engine_hash);
      return;
    }
  }
  BlockRemoved removed{{slots_[slot].engine_hash}, std::string(medium)};
  removed.group_idx = group_idx;
  events->push_back(std::move(removed));
}

void EngineCache::DropFromGroup1(uint32_t slot, std::vector<Event>* events) {
  if (!slots_[slot].group1) return;
  slots_[slot].group1 = false;
  --group1_size_;
  EmitRemoved(kGpuTier, slot, events, /*group=*/1);
}

uint32_t EngineCache::FindVictim(Tier tier, bool keep_closed) const {
  const Tier other = tier == kGpuTier ? kCpuTier : kGpuTier;
  for (uint32_t slot = (tier == kGpuTier ? gpu_ : cpu_).tail; slot != kNone; slot = slots_[slot].prev[tier]) {
    const Block& b = slots_[slot];
    if (b.pin == serve_epoch_) continue;
    if (keep_closed && !b.on[other] && b.children != 0) continue;
    return slot;
  }
  return kNone;
}

void EngineCache::Erase(uint32_t slot) {
  Block& b = slots_[slot];
  if (b.children != 0 || b.on[kGpuTier] || b.on[kCpuTier]) CannotHappen("erasing a block still needed");
  if (b.parent != kNone) --slots_[b.parent].children;
  slot_of_.erase(b.engine_hash);
  keys_[slot] = ExtraKey{};
  free_slots_.push_back(slot);
}

bool EngineCache::EvictOneCpu(std::vector<Event>* events) {
  const uint32_t victim = FindVictim(kCpuTier, /*keep_closed=*/true);
  if (victim == kNone) return false;
  Unlink(kCpuTier, victim);
  slots_[victim].on[kCpuTier] = false;
  EmitRemoved(kCpuTier, victim, events);
  if (!slots_[victim].on[kGpuTier]) Erase(victim);
  return true;
}

void EngineCache::EvictOneGpu(std::vector<Event>* events) {
  if (options_.cpu_capacity_blocks > 0 && !chunked()) {
    const uint32_t victim = FindVictim(kGpuTier, /*keep_closed=*/false);
    if (victim == kNone) CannotHappen("no unpinned GPU block to evict");
    Block& b = slots_[victim];
    if (b.on[kCpuTier]) {
      Touch(kCpuTier, victim);
      Unlink(kGpuTier, victim);
      b.on[kGpuTier] = false;
      EmitRemoved(kGpuTier, victim, events);
      DropFromGroup1(victim, events);
      return;
    }
    if (cpu_.size < options_.cpu_capacity_blocks || EvictOneCpu(events)) {
      events->push_back(StoredEvent(victim, kCpu));
      ++counters_.offloaded_blocks;
      slots_[victim].on[kCpuTier] = true;
      Link(kCpuTier, victim);
      Unlink(kGpuTier, victim);
      slots_[victim].on[kGpuTier] = false;
      EmitRemoved(kGpuTier, victim, events);
      DropFromGroup1(victim, events);
      return;
    }
    // Every CPU block is pinned or holds up a chain: drop a GPU leaf outright.
  }
  uint32_t victim = FindVictim(kGpuTier, /*keep_closed=*/true);
  // Offloading: GPU blocks may all hold up CPU-only chunks; dropping those frees them.
  while (victim == kNone && chunked() && EvictOneChunk(events)) victim = FindVictim(kGpuTier, /*keep_closed=*/true);
  if (victim == kNone) CannotHappen("no GPU block can be evicted");
  Unlink(kGpuTier, victim);
  slots_[victim].on[kGpuTier] = false;
  EmitRemoved(kGpuTier, victim, events);
  DropFromGroup1(victim, events);
  if (!slots_[victim].on[kCpuTier]) Erase(victim);
}

void EngineCache::ChainOf(absl::Span<const uint32_t> tokens, const PromptKeys& keys, size_t max_blocks,
                          std::vector<uint64_t>& out, std::vector<ExtraKey>* block_keys) const {
  const uint32_t bs = options_.block_size;
  const size_t n = std::min<size_t>(tokens.size() / bs, max_blocks);
  out.clear();
  if (block_keys != nullptr) block_keys->clear();
  uint64_t parent = salt_;
  for (size_t i = 0; i < n; ++i) {
    uint64_t h = EngineBlockHash(parent, tokens.subspan(i * bs, bs));
    if (!keys.empty()) {
      ExtraKey k = BlockExtraKeys(keys, i, bs);
      h = k.kind == ExtraKey::Kind::kNil ? h : Mix64(h + ExtraKeysDigest(k));
      if (block_keys != nullptr) block_keys->push_back(std::move(k));
    }
    out.push_back(h);
    parent = h;
  }
}

size_t EngineCache::Serve(absl::Span<const uint32_t> tokens, const PromptKeys& keys, std::vector<Event>* events) {
  ++serve_epoch_;
  ++counters_.prompts;
  const uint32_t bs = options_.block_size;
  const size_t n = std::min<size_t>(tokens.size() / bs, options_.gpu_capacity_blocks);

  // The prompt's engine hashes, and its cached prefix (prefix-closed, so the
  // first miss ends it). Cached blocks of the prompt are pinned.
  ChainOf(tokens, keys, n, chain_, &chain_keys_);
  chain_slots_.clear();
  size_t hit = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t h = chain_[i];
    if (hit == i) {
      if (auto it = slot_of_.find(h); it != slot_of_.end()) {
        chain_slots_.push_back(it->second);
        slots_[it->second].pin = serve_epoch_;
        ++hit;
      }
    }
  }
  counters_.hit_blocks += hit;

  // Room on GPU first, so that the prompt's stores come after the evictions.
  size_t need = n - hit;
  for (size_t i = 0; i < hit; ++i) {
    if (!slots_[chain_slots_[i]].on[kGpuTier]) ++need;
  }
  while (gpu_.size + need > options_.gpu_capacity_blocks) EvictOneGpu(events);

  // Every run of consecutive blocks not on GPU becomes one BlockStored.
  size_t run = kNoRun;
  for (size_t i = 0; i < n; ++i) {
    uint32_t slot;
    if (i < hit) {
      slot = chain_slots_[i];
      if (slots_[slot].on[kGpuTier]) {
        run = kNoRun;
        continue;
      }
      ++counters_.loaded_blocks;
    } else {
      const uint32_t parent_slot = i == 0 ? kNone : chain_slots_[i - 1];
      slot = Allocate();
      std::copy_n(tokens.begin() + i * bs, bs, tokens_.begin() + size_t{slot} * bs);
      Block& b = slots_[slot];
      b.engine_hash = chain_[i];
      b.parent = parent_slot;
      b.depth = static_cast<uint32_t>(i);
      b.pin = serve_epoch_;
      if (i < chain_keys_.size()) {
        keys_[slot] = chain_keys_[i];
        b.salted = i == 0 && !keys.cache_salt.empty();
      }
      if (parent_slot != kNone) ++slots_[parent_slot].children;
      slot_of_.emplace(chain_[i], slot);
      chain_slots_.push_back(slot);
      ++counters_.stored_blocks;
    }
    slots_[slot].on[kGpuTier] = true;
    Link(kGpuTier, slot);
    if (run == kNoRun) {
      events->push_back(StoredEvent(slot, kGpu));
      run = events->size() - 1;
    } else {
      AppendStored(std::get<BlockStored>((*events)[run]), slot);
    }
  }

  // Last block first: parents end up more recently used than their children.
  for (size_t i = n; i-- > 0;) {
    const uint32_t slot = chain_slots_[i];
    Touch(kGpuTier, slot);
    if (chunked() ? slots_[slot].chunk : slots_[slot].on[kCpuTier]) Touch(kCpuTier, slot);
  }
  if (hybrid()) UpdateGroup1(n, hit, events);
  if (chunked() && options_.cpu_capacity_blocks > 0) OffloadChunks(n, events);
  return hit;
}

void EngineCache::UpdateGroup1(size_t n, size_t hit, std::vector<Event>* events) {
  const size_t keep = Group1Keep();
  const size_t first_kept = n > keep ? n - keep : 0;
  // Stores: the blocks the prompt computed (a window group stores them all,
  // then drops those that left the window) and the kept ones it lacks.
  const size_t first_stored = options_.hybrid == HybridKind::kMamba ? first_kept : std::min(hit, first_kept);
  size_t run = kNoRun;
  for (size_t i = first_stored; i < n; ++i) {
    const uint32_t slot = chain_slots_[i];
    if (slots_[slot].group1) {
      run = kNoRun;
      continue;
    }
    slots_[slot].group1 = true;
    ++group1_size_;
    ++counters_.group1_stored;
    if (run == kNoRun) {
      events->push_back(StoredEvent(slot, kGpu, /*group=*/1));
      run = events->size() - 1;
    } else {
      AppendStored(std::get<BlockStored>((*events)[run]), slot);
    }
  }
  for (size_t i = 0; i < first_kept; ++i) DropFromGroup1(chain_slots_[i], events);
}

void EngineCache::ChunkBlocks(uint32_t head, std::vector<uint32_t>& out) const {
  out.clear();
  for (uint32_t slot = head; slot != kNone && out.size() < options_.offload_chunk_blocks; slot = slots_[slot].parent) {
    out.push_back(slot);
  }
}

bool EngineCache::EvictOneChunk(std::vector<Event>* events) {
  for (uint32_t head = cpu_.tail; head != kNone; head = slots_[head].prev[kCpuTier]) {
    ChunkBlocks(head, chunk_scratch_);
    // Its blocks off GPU go with it: none may be pinned or hold up a block
    // that stays (head first, each may only have the one just erased as child).
    bool ok = true, deeper_erased = false;
    for (uint32_t slot : chunk_scratch_) {
      const Block& b = slots_[slot];
      if (b.on[kGpuTier]) {
        deeper_erased = false;
        continue;
      }
      ok = b.pin != serve_epoch_ && b.children == (deeper_erased ? 1u : 0u);
      if (!ok) break;
      deeper_erased = true;
    }
    if (!ok) continue;
    Unlink(kCpuTier, head);
    slots_[head].chunk = false;
    EmitRemoved(kCpuTier, head, events);
    for (uint32_t slot : chunk_scratch_) {
      slots_[slot].on[kCpuTier] = false;
      if (!slots_[slot].on[kGpuTier]) Erase(slot);
    }
    return true;
  }
  return false;
}

void EngineCache::OffloadChunks(size_t n, std::vector<Event>* events) {
  const size_t f = options_.offload_chunk_blocks;
  const size_t capacity = std::max<size_t>(options_.cpu_capacity_blocks / f, 1);
  size_t stored_at = kNoRun;  // the event this prompt's chunks go to, while it is the last one
  for (size_t end = f; end <= n; end += f) {
    const uint32_t head = chain_slots_[end - 1];
    if (slots_[head].chunk) continue;  // on CPU already (touched above)
    // A block covered by another chunk already (prompts branching inside a
    // chunk) would lose its CPU copy with either chunk's removal (kvindex's
    // rule): such a chunk stays GPU-only.
    ChunkBlocks(head, chunk_scratch_);
    if (std::any_of(chunk_scratch_.begin(), chunk_scratch_.end(), [&](uint32_t slot) { return slots_[slot].on[kCpuTier]; })) {
      continue;
    }
    bool room = cpu_.size < capacity;
    while (!room && EvictOneChunk(events)) room = cpu_.size < capacity;
    if (!room) return;  // every chunk is needed: the rest stays GPU-only
    if (stored_at == kNoRun || stored_at + 1 != events->size()) {
      BlockStored s;
      s.block_size = static_cast<uint32_t>(f * options_.block_size);
      s.medium = kCpu;
      if (!options_.lora_name.empty()) {
        s.lora_id = 1;
        s.lora_name = options_.lora_name;
      }
      events->push_back(std::move(s));
      stored_at = events->size() - 1;
    }
    std::get<BlockStored>((*events)[stored_at]).block_hashes.push_back(slots_[head].engine_hash);
    slots_[head].chunk = true;
    Link(kCpuTier, head);
    ChunkBlocks(head, chunk_scratch_);
    for (uint32_t slot : chunk_scratch_) slots_[slot].on[kCpuTier] = true;
    ++counters_.offloaded_chunks;
    counters_.offloaded_blocks += f;
  }
}

void EngineCache::Reset(uint64_t salt) {
  slots_.clear();
  tokens_.clear();
  free_slots_.clear();
  slot_of_.clear();
  keys_.clear();
  gpu_ = Lru{};
  cpu_ = Lru{};
  group1_size_ = 0;
  salt_ = salt;
}

CachedPrefix EngineCache::CachedPrefixMedia(absl::Span<const uint32_t> tokens, const PromptKeys& keys) const {
  std::vector<uint64_t> chain;
  ChainOf(tokens, keys, ~size_t{0}, chain, nullptr);
  std::vector<uint32_t> held_slots;
  for (uint64_t h : chain) {
    auto it = slot_of_.find(h);
    if (it == slot_of_.end()) break;
    held_slots.push_back(it->second);
  }
  size_t n = held_slots.size();
  if (hybrid()) {
    // vLLM's hit: the longest n <= group 0's run whose last Group1Keep()
    // blocks (all of them when fewer) group 1 holds.
    const size_t keep = Group1Keep();
    for (; n > 0; --n) {
      bool accepted = true;
      for (size_t i = n > keep ? n - keep : 0; i < n && accepted; ++i) accepted = slots_[held_slots[i]].group1;
      if (accepted) break;
    }
  }
  CachedPrefix held;
  for (size_t i = 0; i < n; ++i) {
    ++held.blocks;
    held.gpu += slots_[held_slots[i]].on[kGpuTier] ? 1 : 0;
    held.cpu += slots_[held_slots[i]].on[kCpuTier] ? 1 : 0;
  }
  return held;
}

std::vector<HeldBlock> EngineCache::Snapshot() const {
  std::vector<uint32_t> order;
  order.reserve(slot_of_.size());
  for (const auto& [hash, slot] : slot_of_) order.push_back(slot);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return slots_[a].depth < slots_[b].depth; });
  std::vector<uint64_t> index_hash(slots_.size());  // by slot; parents are done first
  std::vector<HeldBlock> out;
  out.reserve(order.size());
  for (uint32_t slot : order) {
    const Block& b = slots_[slot];
    HeldBlock h;
    h.engine_hash = b.engine_hash;
    if (b.parent != kNone) h.parent_index_hash = index_hash[b.parent];
    h.index_hash = index_hash[slot] =
        WithExtraKeys(ReferenceBlockHash(h.parent_index_hash.value_or(context_seed_), TokensOf(slot)), keys_[slot]);
    h.depth = b.depth;
    h.on_gpu = b.on[kGpuTier];
    h.on_cpu = b.on[kCpuTier];
    h.in_group1 = b.group1;
    out.push_back(h);
  }
  std::sort(out.begin(), out.end(), [](const HeldBlock& a, const HeldBlock& b) {
    return std::tie(a.depth, a.index_hash) < std::tie(b.depth, b.index_hash);
  });
  return out;
}

}  // namespace kvindex::sim
