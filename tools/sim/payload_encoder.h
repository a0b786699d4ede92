#pragma once

// Payload encoding: an EventBatch as the msgpack payload a given engine sends
// (../shared/wire/README.md "Payload"). The inverse of DecodeEventBatch().

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/events/event_batch.h"

namespace kvindex::sim {

enum class PayloadLayout {
  kMap,     // current vLLM: each event a map {"type": tag, field: value, ...}
  kArray,   // vLLM before mid-2026: [tag, fields...], BlockStored with all 11 fields
  kSglang,  // SGLang: [tag, fields...], BlockStored stops after lora_name; signed int hashes
};

enum class HashEncoding {
  kInt,    // msgpack int (uint64; int64 two's complement in the SGLang layout)
  kBytes,  // 32-byte msgpack bin whose last 8 bytes are the hash big-endian
};

// "map", "array", "sglang" / "int", "bytes", and back. INVALID_ARGUMENT for other names.
[[nodiscard]] absl::StatusOr<PayloadLayout> ParsePayloadLayout(std::string_view name);
[[nodiscard]] absl::StatusOr<HashEncoding> ParseHashEncoding(std::string_view name);
std::string_view PayloadLayoutName(PayloadLayout layout);
std::string_view HashEncodingName(HashEncoding hashes);

// Encodes `batch` as [ts, events, dp_rank] (nil when dp_rank is unset). Events
// the layout cannot express do not exist: every Event alternative is encoded.
// vLLM's layouts send every 2026 field the event sets, and for one that sets
// none group 0, "full_attention" and nil extra keys (as vLLM does); SGLang's
// array layout has none of them.
std::string EncodePayload(const EventBatch& batch, PayloadLayout layout, HashEncoding hashes);

}  // namespace kvindex::sim
