#pragma once

// Decoding of engine KV-event payloads (msgpack) into EventBatch.

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/events/event_batch.h"

namespace kvindex {

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
  uint32_t max_group_idx = 1023;      // KV cache groups (real models have a handful)
  size_t max_extra_keys_bytes = 1 << 20;  // strs and bytes of one event's extra_keys
  size_t max_extra_keys_depth = 8;    // lists nested inside one block's extra_keys
};

// Decodes one payload. Never throws. Any thread.
//
// A payload whose envelope ([ts, events, dp_rank?], or msgpack itself) does not
// parse returns INVALID_ARGUMENT whose message starts with the reason name,
// e.g. "truncated: payload ends inside a value at byte 12". A known event that
// does not decode (e.g. "bad_token_count: event 0: token_ids: 3 tokens for 2
// blocks of 2") is skipped and listed in EventBatch::bad_events; the batch's
// other events are kept.
[[nodiscard]] absl::StatusOr<EventBatch> DecodeEventBatch(std::string_view payload,
                                            const DecodeLimits& limits = {});

}  // namespace kvindex
