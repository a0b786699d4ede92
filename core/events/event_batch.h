#pragma once

// Typed form of one engine KV-event payload (one ZeroMQ message), as decoded by
// DecodeEventBatch(). Field meanings follow vLLM's kv_events.py and SGLang's;
// see ../shared/wire/README.md for the wire layouts.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kvindex {

// One item of a block's extra_keys (what vLLM folds into its block hash
// besides the tokens: LoRA name, [mm identifier, offset], cache salt,
// prompt-embeddings digest): a str, an int, bytes, nil or a list of items.
struct ExtraKey {
  enum class Kind : uint8_t { kNil, kInt, kStr, kBytes, kList };
  Kind kind = Kind::kNil;
  int64_t number = 0;           // kInt
  bool number_unsigned = false; // kInt above INT64_MAX: `number` is its uint64 bit pattern
  std::string bytes;            // kStr (UTF-8 as sent), kBytes
  std::vector<ExtraKey> items;  // kList

  bool operator==(const ExtraKey&) const = default;
};

// Where a copy of a block lives. `medium` nullopt: the engine did not say (GPU).
struct Tier {
  std::optional<std::string> medium;     // "GPU", "CPU", "STORAGE", SGLang's "CPU_PINNED", ...
  std::optional<std::string> locality;   // vLLM: "LOCAL" or "REMOTE" (relative to the publisher)
  std::optional<std::string> ownership;  // vLLM: the secondary offloading tier's name

  bool operator==(const Tier&) const = default;
};

// The engine stored blocks. Block i's parent is block i-1; block 0's parent is
// parent_block_hash (nullopt for the first block of a prompt).
//
// An offloaded chunk event (vLLM's OffloadingConnector) carries no tokens:
// token_ids is empty, block_hashes names each chunk by the GPU hash of its
// last block, and block_size is the chunk's size in tokens (0 in some
// versions). HasTokens() tells the two shapes apart.
struct BlockStored {
  std::vector<uint64_t> block_hashes;          // engine hashes, one per block
  std::optional<uint64_t> parent_block_hash;   // engine hash of block 0's parent
  std::vector<uint32_t> token_ids;             // block_size * block_hashes.size() tokens, or none
  uint32_t block_size = 0;                     // tokens per block
  std::optional<int64_t> lora_id;
  std::optional<std::string> medium;           // "GPU", "CPU", ...; nullopt: engine did not say
  std::optional<std::string> lora_name;
  // Empty when the engine sent none; else one entry per block: kNil (no extra
  // keys) or a kList of the block's items, in the engine's order.
  std::vector<ExtraKey> extra_keys;
  std::optional<uint32_t> group_idx;           // KV cache group; nullopt means group 0
  std::optional<std::string> kv_cache_spec_kind;  // "full_attention", "sliding_window", "mamba", ...
  std::optional<uint32_t> kv_cache_spec_sliding_window;  // tokens, for sliding-window groups
  std::optional<std::string> locality;
  std::optional<std::string> ownership;
  std::optional<std::string> session_id;       // the request context that emitted it (informational)
  std::optional<std::string> cache_salt;       // SGLang's per-tenant salt

  bool HasTokens() const { return !token_ids.empty() || block_hashes.empty(); }
  bool operator==(const BlockStored&) const = default;
};

// The engine evicted blocks from `medium` (nullopt: engine did not say).
struct BlockRemoved {
  std::vector<uint64_t> block_hashes;
  std::optional<std::string> medium;
  std::optional<uint32_t> group_idx;           // nullopt means group 0
  std::optional<std::string> locality;
  std::optional<std::string> ownership;

  bool operator==(const BlockRemoved&) const = default;
};

// The engine reset its whole prefix cache.
struct AllBlocksCleared {
  bool operator==(const AllBlocksCleared&) const = default;
};

using Event = std::variant<BlockStored, BlockRemoved, AllBlocksCleared>;

// Why a payload, or one event of it, was rejected; the metrics label of decode errors.
enum class DecodeErrorReason {
  kTruncated,       // payload ends before the msgpack value does
  kTrailingBytes,   // bytes after the batch value
  kWrongType,       // a value has the wrong msgpack type (or the batch shape is wrong)
  kBadTokenCount,   // len(token_ids) != block_size * len(block_hashes)
  kTooLarge,        // a declared size or value is absurd (see DecodeLimits)
  kMalformed,       // msgpack itself is invalid
  kBadValue,        // a value outside its domain (e.g. a sliding window of 0 tokens)
};
inline constexpr int kNumDecodeErrorReasons = 7;

// An event of the batch that did not decode: skipped, the rest of the batch kept.
struct BadEvent {
  uint32_t index = 0;  // position in the payload's event list
  DecodeErrorReason reason = DecodeErrorReason::kMalformed;
  std::string message;  // "<reason>: event <index>: <field>: <what>"

  bool operator==(const BadEvent&) const = default;
};

// One payload: [ts, events, dp_rank?].
struct EventBatch {
  double ts = 0;                    // engine wall clock, seconds since the epoch
  std::optional<int64_t> dp_rank;   // data-parallel rank; nullopt in vLLM <= 0.9 payloads
  std::vector<Event> events;        // known, well-formed events, in payload order
  uint32_t skipped_events = 0;      // events with an unknown tag (skipped, not fatal)
  uint32_t skipped_fields = 0;      // unknown map keys inside known events (ignored)
  // Known events that did not decode (skipped): the first 16 with their
  // message, and every one counted by reason.
  std::vector<BadEvent> bad_events;
  std::array<uint32_t, kNumDecodeErrorReasons> bad_events_by_reason{};

  bool operator==(const EventBatch&) const = default;
};

}  // namespace kvindex
