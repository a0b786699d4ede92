#pragma once

// EngineCache: the prefix cache of one simulated engine (one pod's dp rank),
// emitting the KV events a vLLM engine would for the same traffic.
//
// Blocks are full blocks of `block_size` tokens, identified by engine hashes
// (engine_hash.h) chained from a per-process salt. A GPU tier of
// `gpu_capacity_blocks` evicts least recently used blocks; with a CPU tier,
// an evicted GPU block is offloaded (BlockStored medium CPU, then BlockRemoved
// GPU) and the CPU tier evicts LRU in turn (BlockRemoved CPU); a prompt that
// hits CPU-only blocks loads them back (BlockStored GPU).
//
// Invariants (checked by tests against a real PrefixIndex):
//  - the held set (GPU or CPU) is prefix-closed: a held block's parent is
//    held, so every BlockStored names a parent the receiver knows and every
//    held block is matchable from block 0;
//  - a prompt's blocks are never evicted while it is being served, and a
//    prompt never needs more than the GPU capacity (longer ones are served up
//    to it);
//  - blocks are touched from the prompt's last block to its first, so a parent
//    is always more recently used than its children and LRU evicts leaves.
//
// Not thread-safe.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "core/events/event_batch.h"

namespace kvindex::sim {

inline constexpr char kGpu[] = "GPU";
inline constexpr char kCpu[] = "CPU";

// The leading full blocks of a prompt an engine holds, and on which tiers (a
// block on both counts in both).
struct CachedPrefix {
  size_t blocks = 0;
  size_t gpu = 0;
  size_t cpu = 0;
};

struct EngineCacheOptions {
  uint32_t block_size = 16;          // tokens per block; >= 1
  size_t gpu_capacity_blocks = 4096; // >= 1
  size_t cpu_capacity_blocks = 0;    // 0: no CPU tier
  uint64_t salt = 0;                 // block 0's parent in the engine hash chain
  // Context of the index hashes the ground truth reports (README "Index hash").
  std::string model;
  std::string lora_name;             // non-empty: BlockStored carries it and lora_id 1
  // One BlockRemoved per evicted block, as vLLM does; else consecutive
  // removals from one medium share an event.
  bool one_removal_per_event = false;
};

// One held block, as the ground truth reports it.
struct HeldBlock {
  uint64_t engine_hash = 0;
  uint64_t index_hash = 0;                     // kvindex's hash of the chain up to this block
  std::optional<uint64_t> parent_index_hash;   // nullopt for block 0 of a prompt
  uint32_t depth = 0;                          // blocks before it in its chain
  bool on_gpu = false;
  bool on_cpu = false;
};

struct CacheCounters {
  uint64_t prompts = 0;
  uint64_t hit_blocks = 0;       // leading blocks found cached (any tier)
  uint64_t stored_blocks = 0;    // new blocks stored on GPU
  uint64_t loaded_blocks = 0;    // CPU-only blocks loaded back to GPU
  uint64_t offloaded_blocks = 0; // GPU blocks copied to CPU on eviction
  uint64_t removed_gpu = 0;
  uint64_t removed_cpu = 0;
};

class EngineCache {
 public:
  explicit EngineCache(EngineCacheOptions options);

  // Serves one prompt: reuses its longest cached prefix, loads CPU-only blocks
  // of it to GPU, stores its remaining full blocks, evicting as needed first.
  // Appends the events in the engine's order to `events`. Returns the number of
  // leading full blocks that were already cached.
  size_t Serve(absl::Span<const uint32_t> tokens, std::vector<Event>* events);

  // Forgets every block without events (a restart, or before AllBlocksCleared)
  // and chains new hashes from `salt`.
  void Reset(uint64_t salt);

  // Leading full blocks of `tokens` held in any tier.
  size_t CachedPrefixBlocks(absl::Span<const uint32_t> tokens) const { return CachedPrefixMedia(tokens).blocks; }
  // The same blocks, counted per tier.
  CachedPrefix CachedPrefixMedia(absl::Span<const uint32_t> tokens) const;

  // Every held block, parents before children. Index hashes are computed
  // here (not while serving), so this costs O(blocks held).
  std::vector<HeldBlock> Snapshot() const;

  size_t gpu_blocks() const { return gpu_.size; }
  size_t cpu_blocks() const { return cpu_.size; }
  size_t blocks() const { return slot_of_.size(); }
  uint32_t block_size() const { return options_.block_size; }
  uint64_t context_seed() const { return context_seed_; }
  const CacheCounters& counters() const { return counters_; }

 private:
  static constexpr uint32_t kNone = ~uint32_t{0};

  // Slot of the block table. The two LRU tiers are intrusive lists through
  // `link[tier]`; head is most recently used.
  struct Block {
    uint64_t engine_hash = 0;
    uint32_t parent = kNone;  // slot
    uint32_t depth = 0;
    uint32_t children = 0;    // held blocks whose parent this is
    uint64_t pin = 0;         // == serve_epoch_: part of the prompt being served
    bool on[2] = {false, false};
    uint32_t prev[2] = {kNone, kNone};
    uint32_t next[2] = {kNone, kNone};
  };
  struct Lru {
    uint32_t head = kNone;
    uint32_t tail = kNone;
    size_t size = 0;
  };
  enum Tier { kGpuTier = 0, kCpuTier = 1 };

  // Tier membership.
  void Link(Tier tier, uint32_t slot);    // adds at the head
  void Unlink(Tier tier, uint32_t slot);
  void Touch(Tier tier, uint32_t slot);   // moves to the head
  Lru& lru(Tier tier) { return tier == kGpuTier ? gpu_ : cpu_; }

  // Evicts one GPU block (offloading it when there is a CPU tier).
  void EvictOneGpu(std::vector<Event>* events);
  // Evicts one CPU block whose removal keeps the held set prefix-closed.
  // False when there is none.
  bool EvictOneCpu(std::vector<Event>* events);
  // Least recently used block of `tier` that is not pinned and, when
  // `leaf_only`, has no held children; kNone when there is none.
  uint32_t FindVictim(Tier tier, bool leaf_only) const;
  // Drops a block held nowhere any more.
  void Erase(uint32_t slot);
  void EmitRemoved(Tier tier, uint32_t slot, std::vector<Event>* events);
  BlockStored StoredEvent(uint32_t first_slot, const char* medium) const;
  absl::Span<const uint32_t> TokensOf(uint32_t slot) const;
  uint32_t Allocate();

  const EngineCacheOptions options_;
  const uint64_t context_seed_;
  uint64_t salt_;
  uint64_t serve_epoch_ = 0;

  std::vector<Block> slots_;
  std::vector<uint32_t> tokens_;   // block_size tokens per slot
  std::vector<uint32_t> free_slots_;
  absl::flat_hash_map<uint64_t, uint32_t> slot_of_;  // engine hash -> slot, held blocks only
  Lru gpu_;
  Lru cpu_;
  CacheCounters counters_;

  // Scratch of Serve().
  std::vector<uint64_t> chain_;
  std::vector<uint32_t> chain_slots_;
};

}  // namespace kvindex::sim
