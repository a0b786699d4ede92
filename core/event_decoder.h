#pragma once

// Decoding of engine KV-event payloads (msgpack) into EventBatch.

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/event_batch.h"

namespace kvindex {

// Why a payload was rejected; used as the metrics label for decode errors.
enum class DecodeErrorReason {
  kTruncated,       // payload ends before the msgpack value does
  kTrailingBytes,   // bytes after the batch value
  kWrongType,       // a value has the wrong msgpack type (or the batch shape is wrong)
  kBadTokenCount,   // len(token_ids) != block_size * len(block_hashes)
  kTooLarge,        // a declared size or value is absurd (see DecodeLimits)
  kMalformed,       // msgpack itself is invalid
};

// Stable lower_snake name of a reason ("truncated", "wrong_type", ...).
std::string_view DecodeErrorReasonName(DecodeErrorReason reason);

// The reason carried by a status returned from DecodeEventBatch(); kMalformed
// for any other non-OK status.
DecodeErrorReason DecodeErrorReasonOf(const absl::Status& status);

// Upper bounds a single payload must respect. Defaults are far above what any
// engine sends and far below what would hurt the process.
struct DecodeLimits {
  size_t max_payload_bytes = 64 << 20;
  size_t max_events = 1 << 20;
  size_t max_blocks_per_event = 1 << 20;
  uint32_t max_block_size = 1 << 20;  // tokens per block
};

// Decodes one payload. Never throws. On malformed input returns
// INVALID_ARGUMENT whose message starts with the reason name, e.g.
// "bad_token_count: event 0: 3 tokens for 2 blocks of 2".
absl::StatusOr<EventBatch> DecodeEventBatch(std::string_view payload,
                                            const DecodeLimits& limits = {});

}  // namespace kvindex
