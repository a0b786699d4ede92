#pragma once

// Typed form of one engine KV-event payload (one ZeroMQ message), as decoded by
// DecodeEventBatch(). Field meanings follow vLLM's kv_events.py; see
// ../shared/wire/README.md for the wire layouts.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kvindex {

// The engine stored blocks. Block i's parent is block i-1; block 0's parent is
// parent_block_hash (nullopt for the first block of a prompt).
struct BlockStored {
  std::vector<uint64_t> block_hashes;          // engine hashes, one per block
  std::optional<uint64_t> parent_block_hash;   // engine hash of block 0's parent
  std::vector<uint32_t> token_ids;             // block_size * block_hashes.size() tokens
  uint32_t block_size = 0;                     // tokens per block
  std::optional<int64_t> lora_id;
  std::optional<std::string> medium;           // "GPU", "CPU", ...; nullopt: engine did not say
  std::optional<std::string> lora_name;

  bool operator==(const BlockStored&) const = default;
};

// The engine evicted blocks from `medium` (nullopt: engine did not say).
struct BlockRemoved {
  std::vector<uint64_t> block_hashes;
  std::optional<std::string> medium;

  bool operator==(const BlockRemoved&) const = default;
};

// The engine reset its whole prefix cache.
struct AllBlocksCleared {
  bool operator==(const AllBlocksCleared&) const = default;
};

using Event = std::variant<BlockStored, BlockRemoved, AllBlocksCleared>;

// One payload: [ts, events, dp_rank?].
struct EventBatch {
  double ts = 0;                    // engine wall clock, seconds since the epoch
  std::optional<int64_t> dp_rank;   // data-parallel rank; nullopt in vLLM <= 0.9 payloads
  std::vector<Event> events;        // known events, in payload order
  uint32_t skipped_events = 0;      // events with an unknown tag (skipped, not fatal)
  uint32_t skipped_fields = 0;      // unknown map keys inside known events (ignored)

  bool operator==(const EventBatch&) const = default;
};

}  // namespace kvindex
