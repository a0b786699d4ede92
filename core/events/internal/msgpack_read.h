#pragma once

// What DecodeEventBatch's second pass reads values from the msgpack object
// tree with: typed reads that check type and range, and the errors they
// return ("<reason>: event <i>: <field>: <what>"), whose reason
// DecodeErrorReasonOf reads back. Internal to kvindex_events.
//
// Pure functions; thread-safe.

#include <msgpack.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "core/events/event_decoder.h"
#include "core/events/internal/decode_error.h"

namespace kvindex::decoding {

// msgpack's name of o's type ("uint", "str", ...).
std::string_view TypeName(const msgpack::object& o);
// kWrongType: expected `expected`, got o's type.
absl::Status WrongType(const Loc& loc, std::string_view expected, const msgpack::object& got);
// The bytes of a str (or bin) object, pointing into the payload.
std::string_view StrOf(const msgpack::object& o);
// Unsigned integer in [0, max].
absl::Status ReadUint(const msgpack::object& o, const Loc& loc, uint64_t max, uint64_t* out);
// "hash <index>: ", or "" for index < 0.
std::string HashLabel(int64_t index);
// An engine hash: an int of any width (negative: two's complement) or bytes
// (the last 8 bytes big-endian; fewer bytes: their big-endian value).
// `index` >= 0 names the hash's position in its list in errors.
absl::Status ReadHash(const msgpack::object& o, const Loc& loc, int64_t index, uint64_t* out);
// An array of at most `max_blocks` engine hashes.
absl::Status ReadHashes(const msgpack::object& o, const Loc& loc, size_t max_blocks, std::vector<uint64_t>* out);
// An array of token ids, each a uint32.
absl::Status ReadTokens(const msgpack::object& o, const Loc& loc, std::vector<uint32_t>* out);
// Absent (null) or nil.
bool IsNil(const msgpack::object* o);
// A str, or nothing when absent or nil.
absl::Status ReadOptionalString(const msgpack::object* o, const Loc& loc, std::optional<std::string>* out);
// An int64, or nothing when absent or nil.
absl::Status ReadOptionalInt64(const msgpack::object* o, const Loc& loc, std::optional<int64_t>* out);

}  // namespace kvindex::decoding
