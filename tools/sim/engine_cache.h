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
// Variants (EngineCacheOptions), each as vLLM sends it:
//  - offload_chunk_blocks = f: the CPU tier is vLLM's OffloadingConnector.
//    After each prompt, every full chunk of f blocks of it (blocks [jf, jf+f))
//    not yet on CPU is stored there: one BlockStored without tokens, parent
//    nil, block size f*B, medium CPU, naming each chunk by the engine hash of
//    its last block, in the same batch as the prompt's GPU stores. The CPU
//    tier evicts whole chunks LRU (BlockRemoved CPU naming the chunk; its
//    blocks off GPU go too, so only a chunk no other held block needs); a GPU
//    eviction leaves the CPU copy. A chunk overlapping one on CPU already
//    (prompts branching inside a chunk) is not stored, so that a block's CPU
//    copy is one chunk's, as kvindex's rule assumes (a chunk's removal takes
//    the CPU copy off every block it covers).
//  - hybrid: a second KV cache group (group_idx 1) of the same block size and
//    engine hashes: a sliding window of W tokens keeps the ceil((W-1)/B)
//    blocks ending at each prompt's end (stores the prompt's new blocks, then
//    removes the older ones it holds, BlockRemoved group_idx 1); Mamba keeps
//    only the block ending each prompt. Its blocks are a subset of group 0's
//    GPU blocks (a GPU eviction drops them too). Hits follow vLLM's rule
//    (CachedPrefixMedia).
//  - PromptKeys (Serve): blocks carry extra_keys (multimodal inputs, the salt
//    on block 0; with salt_as_field, SGLang's cache_salt field instead), which
//    also enter the engine hash.
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
#include "tools/sim/prompt_keys.h"

namespace kvindex::sim {

inline constexpr char kGpu[] = "GPU";
inline constexpr char kCpu[] = "CPU";

// The leading full blocks of a prompt an engine holds, and on which tiers (a
// block on both counts in both).
// For a hybrid engine, the blocks of group 0 within vLLM's hit.
struct CachedPrefix {
  size_t blocks = 0;
  size_t gpu = 0;
  size_t cpu = 0;
};

enum class HybridKind { kNone, kSlidingWindow, kMamba };

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
  // > 0: the CPU tier (cpu_capacity_blocks blocks, so that many / f chunks)
  // is vLLM's OffloadingConnector with chunks of this many GPU blocks.
  uint32_t offload_chunk_blocks = 0;
  HybridKind hybrid = HybridKind::kNone;
  uint32_t sliding_window = 0;       // tokens, for kSlidingWindow; >= 1
  bool salt_as_field = false;        // a prompt's salt travels as SGLang's cache_salt field
};

inline constexpr char kFullAttention[] = "full_attention";
inline constexpr char kSlidingWindowKind[] = "sliding_window";
inline constexpr char kMambaKind[] = "mamba";

// One held block, as the ground truth reports it.
struct HeldBlock {
  uint64_t engine_hash = 0;
  uint64_t index_hash = 0;                     // kvindex's hash of the chain up to this block
  std::optional<uint64_t> parent_index_hash;   // nullopt for block 0 of a prompt
  uint32_t depth = 0;                          // blocks before it in its chain
  bool on_gpu = false;
  bool on_cpu = false;
  bool in_group1 = false;  // hybrid: also held by KV cache group 1
};

struct CacheCounters {
  uint64_t prompts = 0;
  uint64_t hit_blocks = 0;       // leading blocks found cached (any tier)
  uint64_t stored_blocks = 0;    // new blocks stored on GPU
  uint64_t loaded_blocks = 0;    // CPU-only blocks loaded back to GPU
  uint64_t offloaded_blocks = 0; // GPU blocks copied to CPU on eviction
  uint64_t removed_gpu = 0;
  uint64_t removed_cpu = 0;
  uint64_t offloaded_chunks = 0; // OffloadingConnector chunks stored on CPU
  uint64_t group1_stored = 0;    // hybrid: blocks stored / removed in group 1
  uint64_t group1_removed = 0;
};

class EngineCache {
 public:
  explicit EngineCache(EngineCacheOptions options);

  // Serves one prompt: reuses its longest cached prefix, loads CPU-only blocks
  // of it to GPU, stores its remaining full blocks, evicting as needed first.
  // Appends the events in the engine's order to `events`. Returns the number of
  // leading full blocks that were already cached.
  size_t Serve(absl::Span<const uint32_t> tokens, std::vector<Event>* events) { return Serve(tokens, {}, events); }
  size_t Serve(absl::Span<const uint32_t> tokens, const PromptKeys& keys, std::vector<Event>* events);

  // Forgets every block without events (a restart, or before AllBlocksCleared)
  // and chains new hashes from `salt`.
  void Reset(uint64_t salt);

  // Leading full blocks of `tokens` held in any tier.
  size_t CachedPrefixBlocks(absl::Span<const uint32_t> tokens) const { return CachedPrefixMedia(tokens).blocks; }
  // The same blocks, counted per tier. A hybrid engine's: vLLM's hit (the
  // longest prefix group 1 also accepts: its ceil((W-1)/B) blocks, or for
  // Mamba its one block, ending at the hit's end), counted in group 0's blocks.
  CachedPrefix CachedPrefixMedia(absl::Span<const uint32_t> tokens, const PromptKeys& keys = {}) const;

  // Every held block, parents before children. Index hashes are computed
  // here (not while serving), so this costs O(blocks held).
  std::vector<HeldBlock> Snapshot() const;

  size_t gpu_blocks() const { return gpu_.size; }
  size_t cpu_blocks() const { return cpu_.size; }
  size_t blocks() const { return slot_of_.size(); }
  size_t group1_blocks() const { return group1_size_; }
  uint32_t block_size() const { return options_.block_size; }
  const EngineCacheOptions& options() const { return options_; }
  // Blocks group 1 keeps ending at a prompt's end (hybrid engines).
  size_t Group1Keep() const;
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
    bool chunk = false;       // offloading: the last block of a chunk held on CPU (linked in the CPU LRU)
    bool group1 = false;      // hybrid: held by group 1 too
    bool salted = false;      // block 0 whose keys end with the prompt's salt
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
  void EmitRemoved(Tier tier, uint32_t slot, std::vector<Event>* events, uint32_t group = 0);
  BlockStored StoredEvent(uint32_t first_slot, const char* medium, uint32_t group = 0) const;
  // Appends block `slot` to a BlockStored run.
  void AppendStored(BlockStored& stored, uint32_t slot) const;
  bool hybrid() const { return options_.hybrid != HybridKind::kNone; }
  bool chunked() const { return options_.offload_chunk_blocks > 0; }
  // Offloading: stores the served prompt's chunks (chain_slots_[0..n)) on CPU.
  void OffloadChunks(size_t n, std::vector<Event>* events);
  // Evicts one CPU chunk whose blocks are all on GPU; false when there is none.
  bool EvictOneChunk(std::vector<Event>* events);
  // The chunk's blocks, last first (its head and up to f-1 ancestors).
  void ChunkBlocks(uint32_t head, std::vector<uint32_t>& out) const;
  // Hybrid: group 1's stores and removals for the served prompt; `hit` blocks were cached.
  void UpdateGroup1(size_t n, size_t hit, std::vector<Event>* events);
  void DropFromGroup1(uint32_t slot, std::vector<Event>* events);
  // The engine hashes of a prompt's full blocks (up to `max_blocks`), into `out`.
  void ChainOf(absl::Span<const uint32_t> tokens, const PromptKeys& keys, size_t max_blocks,
               std::vector<uint64_t>& out, std::vector<ExtraKey>* block_keys) const;
  absl::Span<const uint32_t> TokensOf(uint32_t slot) const;
  uint32_t Allocate();

  const EngineCacheOptions options_;
  const uint64_t context_seed_;
  uint64_t salt_;
  uint64_t serve_epoch_ = 0;

  std::vector<Block> slots_;
  std::vector<uint32_t> tokens_;   // block_size tokens per slot
  std::vector<ExtraKey> keys_;     // extra keys per slot (kNil: none)
  std::vector<uint32_t> free_slots_;
  absl::flat_hash_map<uint64_t, uint32_t> slot_of_;  // engine hash -> slot, held blocks only
  Lru gpu_;
  Lru cpu_;                        // blocks, or chunk heads when chunked()
  size_t group1_size_ = 0;
  CacheCounters counters_;

  // Scratch of Serve().
  std::vector<uint64_t> chain_;
  std::vector<uint32_t> chain_slots_;
  std::vector<ExtraKey> chain_keys_;
  std::vector<uint32_t> chunk_scratch_;
};

}  // namespace kvindex::sim
