#include "tools/sim/engine_cache.h"

#include <algorithm>
#include <cstdlib>
#include <tuple>
#include <utility>
#include <variant>

#include "core/index/block_hash.h"
#include "spdlog/spdlog.h"
#include "tools/sim/engine_hash.h"

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
      context_seed_(ContextSeed(options_.model, options_.lora_name, options_.block_size)),
      salt_(options_.salt) {
  if (options_.block_size == 0 || options_.gpu_capacity_blocks == 0) {
    CannotHappen("block_size and gpu_capacity_blocks must be >= 1");
  }
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
  tokens_.resize(tokens_.size() + options_.block_size);
  return static_cast<uint32_t>(slots_.size() - 1);
}

BlockStored EngineCache::StoredEvent(uint32_t first_slot, const char* medium) const {
  const Block& b = slots_[first_slot];
  BlockStored s;
  s.block_hashes.push_back(b.engine_hash);
  if (b.parent != kNone) s.parent_block_hash = slots_[b.parent].engine_hash;
  const auto tokens = TokensOf(first_slot);
  s.token_ids.assign(tokens.begin(), tokens.end());
  s.block_size = options_.block_size;
  s.medium = medium;
  if (!options_.lora_name.empty()) {
    s.lora_id = 1;
    s.lora_name = options_.lora_name;
  }
  return s;
}

void EngineCache::EmitRemoved(Tier tier, uint32_t slot, std::vector<Event>* events) {
  const char* medium = tier == kGpuTier ? kGpu : kCpu;
  ++(tier == kGpuTier ? counters_.removed_gpu : counters_.removed_cpu);
  if (!options_.one_removal_per_event && !events->empty()) {
    if (auto* last = std::get_if<BlockRemoved>(&events->back()); last != nullptr && last->medium == medium) {
      last->block_hashes.push_back(slots_[slot].engine_hash);
      return;
    }
  }
  events->push_back(BlockRemoved{{slots_[slot].engine_hash}, std::string(medium)});
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
  if (options_.cpu_capacity_blocks > 0) {
    const uint32_t victim = FindVictim(kGpuTier, /*keep_closed=*/false);
    if (victim == kNone) CannotHappen("no unpinned GPU block to evict");
    Block& b = slots_[victim];
    if (b.on[kCpuTier]) {
      Touch(kCpuTier, victim);
      Unlink(kGpuTier, victim);
      b.on[kGpuTier] = false;
      EmitRemoved(kGpuTier, victim, events);
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
      return;
    }
    // Every CPU block is pinned or holds up a chain: drop a GPU leaf outright.
  }
  const uint32_t victim = FindVictim(kGpuTier, /*keep_closed=*/true);
  if (victim == kNone) CannotHappen("no GPU block can be evicted");
  Unlink(kGpuTier, victim);
  slots_[victim].on[kGpuTier] = false;
  EmitRemoved(kGpuTier, victim, events);
  if (!slots_[victim].on[kCpuTier]) Erase(victim);
}

size_t EngineCache::Serve(absl::Span<const uint32_t> tokens, std::vector<Event>* events) {
  ++serve_epoch_;
  ++counters_.prompts;
  const uint32_t bs = options_.block_size;
  const size_t n = std::min<size_t>(tokens.size() / bs, options_.gpu_capacity_blocks);

  // The prompt's engine hashes, and its cached prefix (prefix-closed, so the
  // first miss ends it). Cached blocks of the prompt are pinned.
  chain_.clear();
  chain_slots_.clear();
  uint64_t parent = salt_;
  size_t hit = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t h = EngineBlockHash(parent, tokens.subspan(i * bs, bs));
    chain_.push_back(h);
    parent = h;
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
      auto& stored = std::get<BlockStored>((*events)[run]);
      stored.block_hashes.push_back(chain_[i]);
      const auto block_tokens = TokensOf(slot);
      stored.token_ids.insert(stored.token_ids.end(), block_tokens.begin(), block_tokens.end());
    }
  }

  // Last block first: parents end up more recently used than their children.
  for (size_t i = n; i-- > 0;) {
    const uint32_t slot = chain_slots_[i];
    Touch(kGpuTier, slot);
    if (slots_[slot].on[kCpuTier]) Touch(kCpuTier, slot);
  }
  return hit;
}

void EngineCache::Reset(uint64_t salt) {
  slots_.clear();
  tokens_.clear();
  free_slots_.clear();
  slot_of_.clear();
  gpu_ = Lru{};
  cpu_ = Lru{};
  salt_ = salt;
}

CachedPrefix EngineCache::CachedPrefixMedia(absl::Span<const uint32_t> tokens) const {
  const uint32_t bs = options_.block_size;
  uint64_t parent = salt_;
  CachedPrefix held;
  for (size_t i = 0; i < tokens.size() / bs; ++i) {
    parent = EngineBlockHash(parent, tokens.subspan(i * bs, bs));
    auto it = slot_of_.find(parent);
    if (it == slot_of_.end()) break;
    ++held.blocks;
    held.gpu += slots_[it->second].on[kGpuTier] ? 1 : 0;
    held.cpu += slots_[it->second].on[kCpuTier] ? 1 : 0;
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
    h.index_hash = index_hash[slot] = HashBlock(h.parent_index_hash.value_or(context_seed_), TokensOf(slot));
    h.depth = b.depth;
    h.on_gpu = b.on[kGpuTier];
    h.on_cpu = b.on[kCpuTier];
    out.push_back(h);
  }
  std::sort(out.begin(), out.end(), [](const HeldBlock& a, const HeldBlock& b) {
    return std::tie(a.depth, a.index_hash) < std::tie(b.depth, b.index_hash);
  });
  return out;
}

}  // namespace kvindex::sim
