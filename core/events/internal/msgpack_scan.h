#pragma once

// The first pass of DecodeEventBatch: a walk over raw msgpack bytes that
// allocates nothing and proves a payload is exactly one complete msgpack
// value, nested at most kMaxMsgpackDepth deep, with no declared length or
// count above a limit. msgpack-c allocates an array's elements as soon as it
// reads its header; after this pass, the object tree holds at most one object
// per payload byte, whatever the payload declares.
//
// Pure functions; thread-safe.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "core/events/event_decoder.h"

namespace kvindex {

// Deep enough for any real payload and for absurd extra_keys to be an event's
// error (DecodeLimits::max_extra_keys_depth) rather than the batch's; the
// scan's stack is 8 bytes a level.
inline constexpr size_t kMaxMsgpackDepth = 2048;

// OK iff `data` is exactly one complete msgpack value, nested at most
// kMaxMsgpackDepth deep, with no declared length or count above `max_size`;
// else INVALID_ARGUMENT "<reason>: <where>" with reason truncated,
// trailing_bytes, malformed or too_large (DecodeErrorReasonOf reads it).
[[nodiscard]] absl::Status ScanMsgpack(std::string_view data, size_t max_size);

// The big-endian value of p[0..n), n <= 8.
inline uint64_t ReadBigEndian(const unsigned char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace kvindex
