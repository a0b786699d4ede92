#pragma once

// The decoder's errors: INVALID_ARGUMENT "<reason>: event <i>: <field>:
// <what>", whose reason DecodeErrorReasonOf (event_decoder.h) reads back.
// Internal to kvindex_events.

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "core/events/event_decoder.h"

namespace kvindex::decoding {

// Concatenates string pieces and integers. (Debian's absl::string_view is not
// std::string_view, so absl::StrCat does not take the latter.)
inline void AppendPiece(std::string* out, std::string_view s) { out->append(s); }

template <typename T>
  requires std::is_integral_v<T>
void AppendPiece(std::string* out, T v) {
  out->append(std::to_string(v));
}

template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (AppendPiece(&out, args), ...);
  return out;
}

// Where an error is: event index (-1: the batch itself) and field name.
struct Loc {
  int64_t event = -1;
  std::string_view field;
};

// An error of `reason` at `loc` (a default Loc: the payload itself).
absl::Status Fail(DecodeErrorReason reason, const Loc& loc, std::string_view what);

}  // namespace kvindex::decoding
